//! Automatic LSC renewal (issue #14 point 1), through the binary as an operator runs it
//! and with phones over real TLS: LSCs made due by `renew_before_days` are scheduled at
//! the rate limit by the running node, renewed by phones authenticating with the LSC
//! itself, and `capf renew plan|now` show and override the schedule.

mod common;

use capf::model::AuthMode;
use capf::phone::Phone;
use common::cli::{capf, json, ok, Serving};
use std::path::Path;

const NAMES: [&str; 3] = ["SEP00000000A001", "SEP00000000A002", "SEP00000000A003"];

fn serial(data: &Path, name: &str) -> String {
    json(&capf(data, &["device", "show", name, "--json"]))["lsc"]["serial"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn due_lscs_are_renewed_at_the_rate_limit_by_phones_authenticating_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::cli::init(dir.path());

    // Three phones enroll while renewal is off.
    let serving = Serving::start(&data);
    let mut lscs = Vec::new();
    for name in NAMES {
        common::cli::add_null_install(&data, name);
        lscs.push(common::cli::enroll_phone(serving.addr(), &data, &Phone::new(name)).await);
    }
    let plan = capf(&data, &["renew", "plan"]);
    assert!(!plan.status.success());
    assert!(String::from_utf8_lossy(&plan.stderr).contains("LSC renewal is off"));
    serving.stop();

    // Renewal on: fresh 5-year LSCs are due 10 years ahead; two an hour.
    let toml = data.join("capf.toml");
    let settings = std::fs::read_to_string(&toml)
        .unwrap()
        .replace("renew_before_days = 0", "renew_before_days = 3650");
    let settings = settings.replace("renew_per_hour = 100", "renew_per_hour = 2");
    std::fs::write(&toml, settings).unwrap();
    let serving = Serving::start(&data);

    // The node schedules at start: exactly two, soonest expiry first, the third waits.
    let plan = (0..100)
        .map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            json(&capf(&data, &["renew", "plan", "--json"]))
        })
        .find(|p| p["left_this_hour"] == 0)
        .expect("the node scheduled renewals");
    let states: Vec<(&str, &str)> = plan["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["name"].as_str().unwrap(), d["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            (NAMES[0], "scheduled"),
            (NAMES[1], "scheduled"),
            (NAMES[2], "waiting")
        ]
    );
    assert!(plan["devices"][2]["scheduled_by"].is_string());
    let shown = json(&capf(&data, &["device", "show", NAMES[0], "--json"]));
    assert_eq!(shown["operation"], "install");
    assert_eq!(shown["auth"], "lsc");
    let events = ok(&capf(&data, &["events", "--device", NAMES[0], "--json"]));
    assert!(events.contains("scheduled by renewal policy"), "{events}");
    assert!(events.contains("renewal policy"), "{events}");

    // The phone renews, authenticating with the LSC it holds, and gets a new one.
    let before = serial(&data, NAMES[0]);
    let (der, key) = &lscs[0];
    let phone = common::phone_with_lsc(NAMES[0], der, key);
    let (renewed, _) = common::cli::enroll_phone(serving.addr(), &data, &phone).await;
    assert_ne!(&renewed, der);
    let shown = json(&capf(&data, &["device", "show", NAMES[0], "--json"]));
    assert_eq!(shown["status"], "Upgrade Success");
    assert_ne!(serial(&data, NAMES[0]), before);

    // The operator schedules the rest now, past the hourly rate: the third phone, and
    // the first again (with these settings a renewed LSC is due at once).
    let said = ok(&capf(&data, &["renew", "now"]));
    assert!(
        said.contains("scheduled LSC renewal for 2 device(s)"),
        "{said}"
    );
    assert!(said.contains(NAMES[0]) && said.contains(NAMES[2]), "{said}");
    assert!(!said.contains(NAMES[1]), "{said}");
    let shown = json(&capf(&data, &["device", "show", NAMES[2], "--json"]));
    assert_eq!(shown["operation"], "install");
    assert_eq!(shown["auth"], AuthMode::Lsc.to_string());
    serving.stop();
}
