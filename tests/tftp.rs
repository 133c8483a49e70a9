//! TFTP delivery over real UDP on 127.0.0.1: the same on-demand files as HTTP, fetched
//! with a small TFTP client written here and, when it is installed, with curl.

mod common;

use capf::model::{AuthMode, KeyOrder};
use capf::phone_config::format::itl;
use capf::phone_config::format::sgn::{self, FileKind};
use capf::phone_config::tftp::MAX_RETRIES;
use common::{TestNode, DOC};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

const NAME: &str = "SEP001122334455";

/// A node with TFTP delivery on an ephemeral port.
struct Node {
    node: TestNode,
    tftp: SocketAddr,
}

impl Node {
    async fn start() -> Node {
        let node = TestNode::start_with(|s| s.tftp = Some("127.0.0.1:0".parse().unwrap())).await;
        let tftp = node.tftp_addr.expect("TFTP delivery");
        Node { node, tftp }
    }

    fn add(&self, encrypted: bool) {
        let mut d = common::install(NAME, AuthMode::Null, KeyOrder::Rsa { bits: 2048 });
        d.encrypted_config = encrypted;
        self.node.add(d);
    }

    fn document(&self, bytes: &[u8]) {
        self.node.document(NAME, bytes);
    }

    fn signer_certificate(&self) -> Vec<u8> {
        self.node.signer_certificate()
    }

    async fn fetch(&self, name: &str, options: &[(&str, &str)]) -> Answer {
        fetch(self.tftp, name, options).await
    }

    async fn stop(self) {
        self.node.stop().await;
    }
}

/// A document of at least `len` bytes, padded to exactly `len`. Its CAPF section is
/// already what capf writes for the test's device (an install pending, null auth), so it
/// is served as it is and its size is what the test chose.
fn document_of(len: usize) -> Vec<u8> {
    let filler: String = (0..len / 40)
        .map(|i| format!("  <line{i}>{}</line{i}>\n", "x".repeat(8)))
        .collect();
    let mut doc = common::served(DOC, 2).replace("</device>", &format!("{filler}</device>"));
    let short = len.saturating_sub(doc.len());
    doc = doc.replace("</device>", &format!("{}</device>", " ".repeat(short)));
    assert!(doc.len() >= len);
    doc.into_bytes()
}

// ---- a small TFTP client ----

#[derive(Debug)]
enum Answer {
    File {
        bytes: Vec<u8>,
        /// The options the server acknowledged, in its order.
        oack: Vec<(String, String)>,
    },
    Error {
        code: u16,
        message: String,
    },
}

impl Answer {
    fn bytes(self) -> Vec<u8> {
        match self {
            Answer::File { bytes, .. } => bytes,
            error => panic!("no file: {error:?}"),
        }
    }

    fn error_code(&self) -> Option<u16> {
        match self {
            Answer::Error { code, .. } => Some(*code),
            Answer::File { .. } => None,
        }
    }
}

fn request(opcode: u16, fields: &[&str]) -> Vec<u8> {
    let mut packet = opcode.to_be_bytes().to_vec();
    for field in fields {
        packet.extend_from_slice(field.as_bytes());
        packet.push(0);
    }
    packet
}

fn ack(block: u16) -> Vec<u8> {
    let mut packet = vec![0, 4];
    packet.extend_from_slice(&block.to_be_bytes());
    packet
}

fn opcode(packet: &[u8]) -> u16 {
    u16::from_be_bytes([packet[0], packet[1]])
}

fn zero_separated(body: &[u8]) -> Vec<String> {
    let body = body.strip_suffix(&[0]).expect("NUL-terminated");
    body.split(|&b| b == 0)
        .map(|f| String::from_utf8(f.to_vec()).unwrap())
        .collect()
}

fn error_of(packet: &[u8]) -> Answer {
    assert_eq!(opcode(packet), 5, "{packet:?}");
    Answer::Error {
        code: u16::from_be_bytes([packet[2], packet[3]]),
        message: zero_separated(&packet[4..]).concat(),
    }
}

async fn receive(socket: &UdpSocket, within: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 70_000];
    match tokio::time::timeout(within, socket.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => Some((buf[..n].to_vec(), from)),
        Ok(Err(e)) => panic!("receive: {e}"),
        Err(_) => None,
    }
}

async fn must_receive(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    receive(socket, Duration::from_secs(10))
        .await
        .expect("the server answers")
}

async fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

/// Reads `name` in octet mode with `options`, acknowledging each block in turn.
async fn fetch(server: SocketAddr, name: &str, options: &[(&str, &str)]) -> Answer {
    let socket = client().await;
    let mut fields = vec![name, "octet"];
    for (option, value) in options {
        fields.extend([*option, *value]);
    }
    socket.send_to(&request(1, &fields), server).await.unwrap();
    let (mut packet, tid) = must_receive(&socket).await;
    assert_eq!(tid.ip(), server.ip());
    assert_ne!(tid.port(), server.port(), "a transfer has its own port");
    let mut block_size = 512;
    let mut oack = Vec::new();
    match opcode(&packet) {
        5 => return error_of(&packet),
        6 => {
            let fields = zero_separated(&packet[2..]);
            for pair in fields.chunks(2) {
                oack.push((pair[0].clone(), pair[1].clone()));
                if pair[0] == "blksize" {
                    block_size = pair[1].parse().unwrap();
                }
            }
            socket.send_to(&ack(0), tid).await.unwrap();
            packet = must_receive(&socket).await.0;
        }
        3 => {}
        other => panic!("unexpected opcode {other}"),
    }
    let mut bytes = Vec::new();
    let mut expected: u16 = 1;
    loop {
        match opcode(&packet) {
            3 => {}
            5 => return error_of(&packet),
            other => panic!("unexpected opcode {other}"),
        }
        let block = u16::from_be_bytes([packet[2], packet[3]]);
        let data = &packet[4..];
        if block == expected {
            assert!(data.len() <= block_size);
            bytes.extend_from_slice(data);
            socket.send_to(&ack(block), tid).await.unwrap();
            if data.len() < block_size {
                return Answer::File { bytes, oack };
            }
            expected = expected.wrapping_add(1);
        } else {
            // A retransmission of the block already acknowledged.
            assert_eq!(block, expected.wrapping_sub(1));
            socket.send_to(&ack(block), tid).await.unwrap();
        }
        let (next, from) = must_receive(&socket).await;
        assert_eq!(from, tid, "every block comes from the transfer's port");
        packet = next;
    }
}

/// Sends one raw packet to the server port and returns the answer, if any.
async fn exchange_raw(server: SocketAddr, packet: &[u8]) -> Option<(Vec<u8>, SocketAddr)> {
    let socket = client().await;
    socket.send_to(packet, server).await.unwrap();
    receive(&socket, Duration::from_secs(3)).await
}

// ---- tests ----

#[tokio::test]
async fn the_itl_and_signed_configurations_arrive_whole() {
    let n = Node::start().await;
    n.add(false);
    n.document(DOC.as_bytes());

    let itl_bytes = n.fetch("ITLFile.tlv", &[]).await.bytes();
    let list = itl::parse(&itl_bytes).unwrap();
    itl::verify(&list).unwrap();
    // A leading slash, as some clients send, names the same file.
    assert_eq!(
        n.fetch("/ITLFile.tlv", &[]).await.bytes().len(),
        itl_bytes.len()
    );

    // Encryption off: the full document, signed.
    let signed = n.fetch(&format!("{NAME}.cnf.xml.sgn"), &[]).await.bytes();
    let file = sgn::parse(&signed, FileKind::Sgn).unwrap();
    sgn::verify(&file, &n.signer_certificate()).unwrap();
    assert_eq!(file.body, common::served(DOC, 2).as_bytes());
    let enc = n.fetch(&format!("{NAME}.cnf.xml.enc.sgn"), &[]).await;
    assert_eq!(enc.error_code(), Some(1));
    n.stop().await;
}

#[tokio::test]
async fn encryption_on_serves_the_partial_and_no_encrypted_file_before_enrollment() {
    let n = Node::start().await;
    n.add(true);
    n.document(DOC.as_bytes());
    let signed = n
        .fetch(&format!("{NAME}.cnf.xml.sgn"), &[("blksize", "1428")])
        .await
        .bytes();
    let file = sgn::parse(&signed, FileKind::Sgn).unwrap();
    sgn::verify(&file, &n.signer_certificate()).unwrap();
    let body = String::from_utf8(file.body.to_vec()).unwrap();
    assert!(body.contains("<fullConfig>false</fullConfig>"));
    assert!(body.contains("<certHash></certHash>"), "{body}");
    assert!(!body.contains("s3cret"));
    let enc = n.fetch(&format!("{NAME}.cnf.xml.enc.sgn"), &[]).await;
    assert_eq!(enc.error_code(), Some(1));
    n.stop().await;
}

#[tokio::test]
async fn large_files_cross_many_blocks_with_every_block_size() {
    let n = Node::start().await;
    n.add(false);
    // A multiple of 512: the transfer at 512 ends with an empty block.
    let doc = document_of(210 * 1024);
    assert_eq!(doc.len() % 512, 0);
    assert_ne!(doc.len() % 1428, 0);
    n.document(&doc);
    let name = format!("{NAME}.cnf.xml");

    assert_eq!(n.fetch(&name, &[]).await.bytes(), doc);
    for size in ["512", "1428", "65464"] {
        let Answer::File { bytes, oack } =
            n.fetch(&name, &[("blksize", size), ("tsize", "0")]).await
        else {
            panic!("no file at blksize {size}")
        };
        assert_eq!(bytes, doc, "blksize {size}");
        let expected = [
            ("blksize".to_string(), size.to_string()),
            ("tsize".to_string(), doc.len().to_string()),
        ];
        assert_eq!(oack, expected);
    }
    // More than 65535 blocks: the block number wraps, the file still arrives whole.
    let doc = document_of(8 * 65536 + 4000);
    n.document(&doc);
    let started = Instant::now();
    let bytes = n.fetch(&name, &[("blksize", "8")]).await.bytes();
    assert_eq!(bytes, doc);
    eprintln!("{} blocks in {:?}", doc.len() / 8 + 1, started.elapsed());
    n.stop().await;
}

#[tokio::test]
async fn names_not_served_are_file_not_found() {
    let n = Node::start().await;
    n.add(false);
    n.document(DOC.as_bytes());
    for name in [
        "SEPAABBCCDDEEFF.cnf.xml",
        "../capf.toml",
        "/../certs/capf.key",
        "../../etc/passwd",
        "certs/capf.key",
        "capf.toml",
        &format!("{NAME}.cnf.xml/../x"),
        &format!("tftp/{NAME}.cnf.xml"),
        &format!("//{NAME}.cnf.xml"),
        &format!("..\\{NAME}.cnf.xml"),
        "",
        "CTLFile.tlv",
    ] {
        let answer = n.fetch(name, &[]).await;
        assert_eq!(answer.error_code(), Some(1), "{name:?}: {answer:?}");
        if let Answer::Error { message, .. } = answer {
            assert_eq!(message, "File not found");
        }
    }
    n.stop().await;
}

#[tokio::test]
async fn writes_netascii_and_other_packets_are_refused() {
    let n = Node::start().await;
    n.add(false);
    n.document(DOC.as_bytes());
    let name = format!("{NAME}.cnf.xml");

    let (wrq, _) = exchange_raw(n.tftp, &request(2, &[&name, "octet"]))
        .await
        .expect("a WRQ is answered");
    assert_eq!(error_of(&wrq).error_code(), Some(2));
    for illegal in [ack(1), vec![0, 9, 1, 2], vec![7]] {
        let (answer, _) = exchange_raw(n.tftp, &illegal).await.expect("answered");
        assert_eq!(error_of(&answer).error_code(), Some(4), "{illegal:?}");
    }
    let too_long = request(1, &[&"A".repeat(600), "octet"]);
    let (answer, _) = exchange_raw(n.tftp, &too_long).await.expect("answered");
    assert_eq!(error_of(&answer).error_code(), Some(4));
    // An ERROR packet is never answered.
    assert!(exchange_raw(n.tftp, &[0, 5, 0, 0, 0]).await.is_none());

    // netascii would rewrite the bytes of signed files: refused, not altered.
    let (answer, tid) = exchange_raw(n.tftp, &request(1, &[&name, "netascii"]))
        .await
        .expect("answered");
    assert_ne!(tid, n.tftp);
    assert_eq!(error_of(&answer).error_code(), Some(0));
    n.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_acknowledging_is_given_up_while_others_are_served() {
    let n = Node::start().await;
    n.add(false);
    n.document(DOC.as_bytes());
    let name = format!("{NAME}.cnf.xml");

    let silent = client().await;
    silent
        .send_to(&request(1, &[&name, "octet", "timeout", "1"]), n.tftp)
        .await
        .unwrap();
    let (oack, tid) = must_receive(&silent).await;
    assert_eq!(opcode(&oack), 6);
    silent.send_to(&ack(0), tid).await.unwrap();
    let started = Instant::now();

    // Another phone is served while the silent one is retried.
    let other = n.fetch(&name, &[]).await.bytes();
    assert_eq!(other, common::served(DOC, 2).as_bytes());

    let mut copies = 0;
    while let Some((packet, from)) = receive(&silent, Duration::from_secs(3)).await {
        assert_eq!(from, tid);
        assert_eq!(&packet[..4], &[0, 3, 0, 1], "only block 1, sent again");
        copies += 1;
    }
    let given_up = started.elapsed();
    assert_eq!(copies, 1 + MAX_RETRIES);
    assert!(given_up < Duration::from_secs(15), "{given_up:?}");

    // The transfer is over: a late ACK gets nothing more.
    silent.send_to(&ack(1), tid).await.unwrap();
    assert!(receive(&silent, Duration::from_secs(1)).await.is_none());
    assert_eq!(
        n.fetch(&name, &[]).await.bytes(),
        common::served(DOC, 2).as_bytes()
    );
    n.stop().await;
}

/// curl's TFTP client, when installed: exit 0 with the file, 68 for not found.
#[tokio::test]
async fn curl_fetches_over_tftp() {
    let curl_works = tokio::process::Command::new("curl")
        .arg("--version")
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    if !curl_works {
        eprintln!("curl is not installed: skipping the curl TFTP test");
        return;
    }
    let n = Node::start().await;
    n.add(false);
    let doc = document_of(70 * 1024);
    n.document(&doc);
    let out = tempfile::tempdir().unwrap();
    let curl = |name: &str, extra: &[&str]| {
        let file = out.path().join("out");
        let _ = std::fs::remove_file(&file);
        let mut command = tokio::process::Command::new("curl");
        command
            .args(["--silent", "--path-as-is", "--max-time", "30", "--output"])
            .arg(&file)
            .args(extra)
            .arg(format!("tftp://{}/{name}", n.tftp));
        async move {
            let status = command.status().await.unwrap();
            (status.code(), std::fs::read(&file).ok())
        }
    };

    let (code, body) = curl(&format!("{NAME}.cnf.xml"), &[]).await;
    assert_eq!(code, Some(0));
    assert_eq!(body.unwrap(), doc);
    let (code, body) = curl(&format!("{NAME}.cnf.xml"), &["--tftp-blksize", "1428"]).await;
    assert_eq!(code, Some(0));
    assert_eq!(body.unwrap(), doc);
    let (code, body) = curl("ITLFile.tlv", &[]).await;
    assert_eq!(code, Some(0));
    itl::parse(&body.unwrap()).unwrap();

    for missing in ["SEPAABBCCDDEEFF.cnf.xml", "../capf.toml", "certs/capf.key"] {
        let (code, _) = curl(missing, &[]).await;
        assert_eq!(code, Some(68), "{missing}: TFTP file not found");
    }
    n.stop().await;
}
