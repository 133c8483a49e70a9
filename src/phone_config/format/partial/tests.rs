use super::*;
use crate::phone_config::format::document::DeviceDocument;
use crate::phone_config::testpki::SEP_DOC;

const HASH: &str = "5f1c0a7e93b24d68a0c4e2f17b39d851";

fn facts(hash: Option<&str>) -> PartialFacts<'_> {
    PartialFacts {
        node_name: "capf.example.net",
        capf_port: 3804,
        capf_auth_mode: 0,
        cert_hash: hash,
    }
}

fn partial(xml: &str, facts: &PartialFacts<'_>) -> String {
    String::from_utf8(build(xml.as_bytes(), facts).unwrap()).unwrap()
}

/// The body between the fixed first lines and the fixed last lines.
fn kept(xml: &str) -> String {
    let out = partial(&format!("<device>{xml}</device>"), &facts(None));
    let start = out.find("  <fullConfig>false</fullConfig>\n").unwrap() + 33;
    let end = out.find("  <capfAuthMode>").unwrap();
    out[start..end].to_owned()
}

#[test]
fn section_8_1_input_gives_exactly_the_section_8_4_body() {
    let expected = r#"<?xml version="1.0" encoding="UTF-8"?>
<device>
  <fullConfig>false</fullConfig>
  <ipAddressMode>0</ipAddressMode>
  <loadInformation>SIP75.9-4-2SR3-1S</loadInformation>
  <capfAuthMode>0</capfAuthMode>
  <capfList>
    <capf>
      <phonePort>3804</phonePort>
      <processNodeName>capf.example.net</processNodeName>
    </capf>
  </capfList>
  <certHash>5f1c0a7e93b24d68a0c4e2f17b39d851</certHash>
  <encrConfig>true</encrConfig>
</device>
"#;
    let out = partial(SEP_DOC, &facts(Some(HASH)));
    assert_eq!(out, expected);
    assert_eq!(out.len(), 444);
}

#[test]
fn nothing_else_of_the_full_document_leaks() {
    let out = partial(SEP_DOC, &facts(None));
    for secret in [
        "sipProfile",
        "authPassword",
        "s3cret",
        "1001",
        "deviceProtocol",
        "SIP<",
    ] {
        assert!(!out.contains(secret), "{secret} leaked");
    }
    let doc = DeviceDocument::parse(out.as_bytes()).unwrap();
    let names: Vec<&str> = doc
        .root()
        .children
        .iter()
        .filter_map(|n| match n {
            Node::Element(e) => Some(e.name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        names,
        [
            "fullConfig",
            "ipAddressMode",
            "loadInformation",
            "capfAuthMode",
            "capfList",
            "certHash",
            "encrConfig"
        ]
    );
    assert!(out.contains("  <certHash></certHash>\n"));
}

#[test]
fn capf_writes_its_own_facts_in_place_of_the_base_ones() {
    let xml = "<device><capfList><capf><phonePort>1</phonePort><processNodeName>old</processNodeName></capf></capfList>\
                   <loadInformation>L</loadInformation><capfAuthMode>2</capfAuthMode><capfList/></device>";
    let f = PartialFacts {
        node_name: "new & <b>",
        capf_port: 4000,
        capf_auth_mode: 2,
        cert_hash: None,
    };
    let out = partial(xml, &f);
    let expected = "  <fullConfig>false</fullConfig>\n  <capfList>\n    <capf>\n      <phonePort>4000</phonePort>\n      \
                        <processNodeName>new &amp; &lt;b&gt;</processNodeName>\n    </capf>\n  </capfList>\n  \
                        <loadInformation>L</loadInformation>\n  <capfAuthMode>2</capfAuthMode>\n  <certHash></certHash>\n";
    assert!(out.contains(expected), "{out}");
    assert!(!out.contains("old"));
    assert_eq!(out.matches("<capfList>").count(), 1);
}

#[test]
fn missing_capf_elements_are_synthesized_after_the_copies() {
    let out = partial(
        "<device><loadInformation>L</loadInformation></device>",
        &facts(None),
    );
    let load = out.find("<loadInformation>").unwrap();
    let auth = out.find("<capfAuthMode>0</capfAuthMode>").unwrap();
    let list = out
        .find("<processNodeName>capf.example.net</processNodeName>")
        .unwrap();
    assert!(load < auth && auth < list);
}

#[test]
fn duplicates_are_all_copied_in_order() {
    assert_eq!(
            kept("<loadInformation>a</loadInformation><x/><ipAddressMode>0</ipAddressMode><loadInformation>b</loadInformation>"),
            "  <loadInformation>a</loadInformation>\n  <ipAddressMode>0</ipAddressMode>\n  <loadInformation>b</loadInformation>\n"
        );
}

#[test]
fn empty_elements_self_close_and_whitespace_only_text_is_kept() {
    assert_eq!(
        kept("<ipAddressMode></ipAddressMode>"),
        "  <ipAddressMode/>\n"
    );
    assert_eq!(kept("<ipAddressMode/>"), "  <ipAddressMode/>\n");
    assert_eq!(
        kept("<ipAddressMode> </ipAddressMode>"),
        "  <ipAddressMode> </ipAddressMode>\n"
    );
}

#[test]
fn text_and_attributes_are_escaped_as_specified() {
    assert_eq!(
            kept("<loadInformation model=\"a&quot;b&#9;c'd\tz&#10;\">x &amp; 'é' &lt;&#13;<![CDATA[>&]]>\r\ny\"</loadInformation>"),
            "  <loadInformation model=\"a&quot;b&#9;c'd z&#10;\">x &amp; '&#233;' &lt;&#13;&gt;&amp;\ny\"</loadInformation>\n"
        );
}

#[test]
fn nested_elements_are_indented_with_comments_on_their_own_lines() {
    assert_eq!(
            kept("<!-- top --><loadInformation>\r\n\t<!-- c é -->\n <a k=\"v\"><b>1</b><c/></a><?pi x?></loadInformation>"),
            "  <loadInformation>\n    <!-- c &#233; -->\n    <a k=\"v\">\n      <b>1</b>\n      <c/>\n    </a>\n    <?pi x?>\n  </loadInformation>\n"
        );
}

#[test]
fn mixed_content_is_copied_without_reindenting() {
    assert_eq!(
        kept("<loadInformation>a <b> c </b>\n d<!--x--></loadInformation>"),
        "  <loadInformation>a <b> c </b>\n d<!--x--></loadInformation>\n"
    );
}

#[test]
fn the_body_is_pure_ascii() {
    let xml = "<device><loadInformation>日本</loadInformation></device>";
    let f = PartialFacts {
        node_name: "nœud",
        ..facts(None)
    };
    let out = partial(xml, &f);
    assert!(out.is_ascii());
    assert!(out.contains("<loadInformation>&#26085;&#26412;</loadInformation>"));
    assert!(out.contains("n&#339;ud"));
}

#[test]
fn non_ascii_names_in_kept_elements_are_refused() {
    let doc = "<device><loadInformation><é/></loadInformation></device>";
    assert!(build(doc.as_bytes(), &facts(None)).is_err());
}

#[test]
fn the_partial_refuses_what_the_parser_refuses() {
    for bad in crate::phone_config::format::document::tests::NOT_WELL_FORMED {
        assert!(
            build(bad.as_bytes(), &facts(None)).is_err(),
            "built {bad:?}"
        );
    }
}

/// Only `<device>`'s own children are copied or replaced: the same names deeper in
/// the document (a vendor section, say) are not the phone's load or CAPF settings.
#[test]
fn only_top_level_elements_are_copied() {
    let out = partial(
        "<device><vendorConfig><loadInformation>wrong</loadInformation>\
         <capfAuthMode>9</capfAuthMode></vendorConfig>\
         <loadInformation><!-- c --><a x=\"1\">sip88xx</a></loadInformation>\
         <ipAddressMode/></device>",
        &facts(None),
    );
    assert!(!out.contains("wrong"), "{out}");
    assert!(
        out.contains("<loadInformation>\n    <!-- c -->\n    <a x=\"1\">sip88xx</a>\n  </loadInformation>\n  <ipAddressMode/>\n"),
        "{out}"
    );
    assert_eq!(out.matches("<capfAuthMode>").count(), 1, "{out}");
}
