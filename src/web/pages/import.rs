//! Bulk import: the upload, its dry-run preview, and the confirmation that runs
//! `capf device import` on the file the preview checked.

use super::*;

impl Web {
    pub(super) fn import_form(&self, op: &Operator, message: Option<&str>) -> Response<Body> {
        let mut b = String::new();
        if let Some(m) = message {
            let _ = write!(b, "<p class=\"note error\" role=\"alert\">{}</p>", esc(m));
        }
        let _ = write!(
            b,
            "<p>The file <code>capf device import</code> takes: capf's CSV (the header \
             <code>name,operation,auth,auth_string,key,encrypted_config,deadline</code>, as \
             <code>capf device export</code> writes it) or a CUCM BAT phone export. Every row \
             is checked first and what would change is shown; nothing is written until you \
             confirm, and a file with any bad row writes nothing.</p>\
             <form class=\"box\" method=\"post\" action=\"/import\" enctype=\"multipart/form-data\">{}\
             <label>CSV file<input type=\"file\" name=\"file\" accept=\".csv,text/csv\" required></label>\
             <button type=\"submit\">Check (dry run)</button></form>",
            csrf_field(&op.session.csrf)
        );
        html_response(
            StatusCode::OK,
            page("Import phones", Some(&op.viewer()), &b),
        )
    }

    pub(super) async fn import_preview(
        self: &Arc<Self>,
        op: &Operator,
        form: Form,
    ) -> Response<Body> {
        let Some((file_name, bytes)) = form.file else {
            return self.import_form(op, Some("Choose a CSV file."));
        };
        let pending = PendingImport {
            id: session::random_token(),
            file_name: file_name.chars().take(200).collect(),
            bytes: Arc::new(bytes),
        };
        let (ok, output) = self.run_import(&op.session.account, &pending, true).await;
        let mut b = format!(
            "<p>File <code>{}</code>, {} bytes.</p>",
            esc(&pending.file_name),
            pending.bytes.len()
        );
        if ok {
            let _ = write!(
                b,
                "<section class=\"note ok\" aria-label=\"Dry run\"><strong>Dry run: nothing has been written yet</strong>\
                 <pre id=\"preview\">{}</pre></section>\
                 <form class=\"box\" method=\"post\" action=\"/import/confirm\">{}\
                 <input type=\"hidden\" name=\"upload\" value=\"{}\">\
                 <button type=\"submit\">Import this file</button></form>",
                esc(&shorten(&output)),
                csrf_field(&op.session.csrf),
                esc(&pending.id)
            );
            self.sessions.set_pending_import(&op.token, Some(pending));
        } else {
            let _ = write!(
                b,
                "<section class=\"note error\" aria-label=\"Dry run\"><strong>Nothing was imported</strong>\
                 <pre id=\"preview\">{}</pre></section><p><a href=\"/import\">Import another file</a></p>",
                esc(&shorten(&output))
            );
            self.sessions.set_pending_import(&op.token, None);
        }
        html_response(
            StatusCode::OK,
            page("Import phones: check", Some(&op.viewer()), &b),
        )
    }

    pub(super) async fn import_confirm(
        self: &Arc<Self>,
        op: &Operator,
        form: Form,
    ) -> Response<Body> {
        let pending = op
            .session
            .pending_import
            .clone()
            .filter(|p| session::tokens_equal(&p.id, form.get("upload")));
        let Some(pending) = pending else {
            return self.import_form(
                op,
                Some("That upload is no longer waiting (checked in another tab, or the session was renewed): upload it again."),
            );
        };
        self.sessions.set_pending_import(&op.token, None);
        let (ok, output) = self.run_import(&op.session.account, &pending, false).await;
        self.forget_dashboard();
        let b = format!(
            "<section class=\"note {}\" aria-label=\"Import\"><strong>{}</strong><pre id=\"outcome\">{}</pre></section>\
             <p><a href=\"/phones\">Phones</a> · <a href=\"/import\">Import another file</a></p>",
            if ok { "ok" } else { "error" },
            if ok { "Imported" } else { "The import stopped" },
            esc(&shorten(&output))
        );
        html_response(
            StatusCode::OK,
            page("Import phones", Some(&op.viewer()), &b),
        )
    }

    /// `capf device import [--dry-run] FILE` on the upload, written for the command to
    /// a private file in the data directory and removed after.
    pub(super) async fn run_import(
        self: &Arc<Self>,
        account: &str,
        pending: &PendingImport,
        dry_run: bool,
    ) -> (bool, String) {
        let path = self
            .data
            .root()
            .join(format!("web-import-{}.csv", session::random_token()));
        let written = {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| f.write_all(&pending.bytes))
        };
        if let Err(e) = written {
            let _ = std::fs::remove_file(&path);
            return (false, format!("error: cannot keep the upload: {e}"));
        }
        let mut args: Vec<String> = vec!["device".into(), "import".into()];
        if dry_run {
            args.push("--dry-run".into());
        }
        args.push("--".into());
        args.push(path.to_string_lossy().into_owned());
        let (ok, output) = self.run_command(account, args).await;
        let _ = std::fs::remove_file(&path);
        // The private file name means nothing to the operator.
        let shown = path.to_string_lossy().into_owned();
        (ok, output.replace(&shown, &pending.file_name))
    }
}
