use super::*;
use crate::model::EcCurve;
use base64::Engine;
use serde_json::{json, Value};

/// The renderer as it was, building a `Value` per entry: the reference the
/// streamed views must match.
fn cert_value(c: &EnrolledCert) -> Value {
    json!({
        "md5": c.md5,
        "sha256": c.sha256,
        "serial": c.serial,
        "not_before": time(c.not_before),
        "not_after": time(c.not_after),
        "key": c.key.to_string(),
        "public_key": base64::engine::general_purpose::STANDARD.encode(&c.public_key),
        "issuer": c.issuer,
        "subject": c.subject,
        "pem": crate::ca::certificate_pem(&c.der),
    })
}

fn device_value(d: &DeviceRecord) -> Value {
    let opt_time = |t: Option<UnixTime>| t.map_or(Value::Null, |t| Value::String(time(t)));
    let opt_cert = |c: Option<&EnrolledCert>| c.map_or(Value::Null, cert_value);
    json!({
        "name": d.name,
        "operation": d.operation.to_string(),
        "auth": d.auth.to_string(),
        "auth_string": d.auth_string,
        "key": d.key_order.to_string(),
        "deadline": opt_time(d.deadline),
        "encrypted_config": d.encrypted_config,
        "config_delivery": crate::phone_config::plan::delivery(d),
        "status": d.status.to_string(),
        "last_attempt": opt_time(d.last_attempt),
        "failed_auth": d.failed_auth,
        "locked_out": d.is_locked(crate::model::now()),
        "locked_until": opt_time(d.locked_until),
        "lsc": opt_cert(d.lsc.as_ref()),
        "mic": opt_cert(d.mic.as_ref()),
        "unconfirmed_lsc": opt_cert(d.unconfirmed_lsc.as_ref()),
    })
}

fn key_value(name: &str, kind: CertKind, c: &EnrolledCert) -> Value {
    let mut v = cert_value(c);
    if let Value::Object(map) = &mut v {
        map.insert("name".into(), name.into());
        map.insert("type".into(), kind.to_string().into());
    }
    v
}

/// A real certificate, described by `ca::cert_info`.
fn enrolled(name: &str) -> EnrolledCert {
    let issued = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    crate::ca::cert_info(issued.cert.der()).unwrap()
}

/// A device with every field set, including text that JSON must escape.
fn every_field() -> DeviceRecord {
    DeviceRecord {
        operation: Operation::Install,
        auth: AuthMode::String,
        auth_string: Some("12345678".into()),
        key_order: KeyOrder::EcPreferred {
            curve: EcCurve::P384,
            bits: 3072,
        },
        deadline: Some(1_800_000_000),
        encrypted_config: true,
        status: OperationStatus::UpgradeFailed("Invalid \"Authentication\" String\n".into()),
        last_attempt: Some(1_750_000_000),
        failed_auth: 3,
        locked_until: Some(1_750_000_600),
        lsc: Some(enrolled("lsc.example")),
        mic: Some(enrolled("mic.example")),
        unconfirmed_lsc: Some(enrolled("next.example")),
        ..DeviceRecord::new("SEP001122334455")
    }
}

#[test]
fn streamed_device_json_is_what_the_value_renderer_printed() {
    let d = every_field();
    let expected = device_value(&d);
    assert!(
        expected.as_object().unwrap().values().all(|v| !v.is_null()),
        "every field set: {expected:#}"
    );
    let view = DeviceJson(d.clone());
    assert_eq!(serde_json::to_value(&view).unwrap(), expected);
    assert_eq!(
        serde_json::to_string_pretty(&view).unwrap(),
        serde_json::to_string_pretty(&expected).unwrap(),
        "byte for byte"
    );

    // Unset fields are null, as before.
    let bare = DeviceRecord::new("SEP000000000001");
    assert_eq!(
        serde_json::to_value(DeviceJson(bare.clone())).unwrap(),
        device_value(&bare)
    );

    // The streamed array is the pretty-printed array of the values.
    let mut out = Vec::new();
    json_array(
        &mut out,
        [Ok(DeviceJson(d.clone())), Ok(DeviceJson(bare.clone()))],
    )
    .unwrap();
    let mut expected_array =
        serde_json::to_string_pretty(&[device_value(&d), device_value(&bare)]).unwrap();
    expected_array.push('\n');
    assert_eq!(String::from_utf8(out).unwrap(), expected_array);

    let mut out = Vec::new();
    json_array(&mut out, std::iter::empty::<anyhow::Result<DeviceJson>>()).unwrap();
    assert_eq!(out, b"[]\n");
}

#[test]
fn streamed_key_json_is_what_the_value_renderer_printed() {
    let d = every_field();
    let lsc = d.lsc.clone().unwrap();
    let entry = KeyJson {
        name: d.name.clone(),
        kind: CertKind::Lsc,
        cert: lsc.clone(),
    };
    let expected = key_value(&d.name, CertKind::Lsc, &lsc);
    assert_eq!(serde_json::to_value(&entry).unwrap(), expected);
    assert_eq!(
        serde_json::to_string_pretty(&entry).unwrap(),
        serde_json::to_string_pretty(&expected).unwrap()
    );
    assert_eq!(
        serde_json::to_value(cert_json(&lsc)).unwrap(),
        cert_value(&lsc)
    );
}

#[test]
fn the_device_table_sizes_columns_to_their_widest_cell() {
    let mut enrolled_phone = every_field();
    enrolled_phone.status = OperationStatus::UpgradeSuccess;
    let md5 = enrolled_phone.lsc.as_ref().unwrap().md5.clone();
    let mut out = Vec::new();
    device_table(
        &mut out,
        // After the lockout of `every_field` ended.
        1_800_000_000,
        [Ok(DeviceRecord::new("CSFjdoe")), Ok(enrolled_phone)],
    )
    .unwrap();
    let expected = format!(
            "NAME             OPERATION  AUTH    KEY                         STATUS           LAST ATTEMPT          LSC MD5                           DEADLINE\n\
             CSFjdoe          none       null    rsa:2048                    None             -                     -                                 -\n\
             SEP001122334455  install    string  ec-preferred:p384,rsa:3072  Upgrade Success  2025-06-15T15:06:40Z  {md5}  2027-01-15T08:00:00Z\n"
        );
    assert_eq!(String::from_utf8(out).unwrap(), expected);
}
