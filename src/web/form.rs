//! Posted forms: a request body read within its limits, as urlencoded fields or as a
//! `multipart/form-data` upload (its fields and its one file).

use super::{text, Body, BODY_TIMEOUT};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header;
use hyper::{Response, StatusCode};
use std::collections::HashMap;

/// A posted form: urlencoded fields, or a multipart upload's fields and file.
#[derive(Default)]
pub(crate) struct Form {
    pub fields: HashMap<String, String>,
    pub file: Option<(String, Vec<u8>)>,
}

impl Form {
    pub fn get(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }
}

/// Reads a request body of at most `limit` bytes within [`BODY_TIMEOUT`] and parses
/// it as a form (urlencoded or multipart).
pub(super) async fn read_form(
    headers: &hyper::HeaderMap,
    body: Incoming,
    limit: usize,
) -> Result<Form, Response<Body>> {
    let too_large = || {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request is larger than {limit} bytes"),
        )
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, limit).collect()).await
    {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(_)) => return Err(too_large()),
        Err(_) => {
            return Err(text(
                StatusCode::REQUEST_TIMEOUT,
                "the request body was too slow",
            ))
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some(boundary) = content_type
        .strip_prefix("multipart/form-data")
        .and_then(|rest| {
            rest.split(';')
                .find_map(|p| p.trim().strip_prefix("boundary="))
        })
    {
        return parse_multipart(&bytes, boundary.trim_matches('"'))
            .ok_or_else(|| text(StatusCode::BAD_REQUEST, "malformed multipart form"));
    }
    Ok(Form {
        fields: form_urlencoded::parse(&bytes).into_owned().collect(),
        file: None,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut at = 0;
    while at + needle.len() <= haystack.len() {
        let i = at
            + haystack[at..=haystack.len() - needle.len()]
                .iter()
                .position(|&b| b == first)?;
        if &haystack[i..i + needle.len()] == needle {
            return Some(i);
        }
        at = i + 1;
    }
    None
}

/// A `multipart/form-data` body: its text fields and its one file (the first part with
/// a file name).
fn parse_multipart(body: &[u8], boundary: &str) -> Option<Form> {
    if boundary.is_empty() || boundary.len() > 200 {
        return None;
    }
    let delimiter = format!("--{boundary}");
    let next_part = format!("\r\n--{boundary}");
    let mut rest = &body[find(body, delimiter.as_bytes())? + delimiter.len()..];
    let mut form = Form::default();
    loop {
        if rest.starts_with(b"--") {
            return Some(form);
        }
        rest = rest.strip_prefix(b"\r\n")?;
        let head_end = find(rest, b"\r\n\r\n")?;
        let head = std::str::from_utf8(&rest[..head_end]).ok()?;
        let content = &rest[head_end + 4..];
        let end = find(content, next_part.as_bytes())?;
        let data = &content[..end];
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))?;
        let param = |key: &str| {
            disposition.split(';').find_map(|p| {
                p.trim()
                    .strip_prefix(key)
                    .and_then(|v| v.strip_prefix('='))
                    .map(|v| v.trim_matches('"').to_string())
            })
        };
        let name = param("name")?;
        match param("filename") {
            Some(file_name) if form.file.is_none() => {
                form.file = Some((file_name, data.to_vec()));
            }
            Some(_) => {}
            None => {
                form.fields
                    .insert(name, String::from_utf8_lossy(data).into_owned());
            }
        }
        rest = &content[end + next_part.len()..];
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn multipart_forms_are_parsed() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\nabc\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.csv\"\r\nContent-Type: text/csv\r\n\r\nname,op\r\nx,y\r\n\r\n--XyZ--\r\n";
        let form = super::parse_multipart(body, "XyZ").unwrap();
        assert_eq!(form.get("csrf"), "abc");
        let (name, data) = form.file.unwrap();
        assert_eq!(name, "p.csv");
        assert_eq!(data, b"name,op\r\nx,y\r\n");
        assert!(super::parse_multipart(b"garbage", "XyZ").is_none());
    }
}
