//! TLS on both endpoints over real sockets, with a plain rustls client:
//! HTTPS on the HTTP port (ALPN `http/1.1`, keep-alive, a body larger than
//! the TLS buffers), ALPN `h2` on the gRPC port, and startup errors for
//! unusable certificate files.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nereid::net::{GrpcServer, GrpcServerConfig, HttpConfig, HttpServer, TlsConfig};
use nereid::protocol::grpc::{GrpcConfig, GrpcService};
use nereid::protocol::kserve::RestService;
use nereid::repository::{ControlMode, ManagerOptions};
use nereid::server::{Server, ServerOptions};
use rustls::pki_types::{CertificateDer, ServerName};

/// A CA and a server certificate for localhost, as PEM files.
struct Pki {
    dir: PathBuf,
    ca: CertificateDer<'static>,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = std::env::temp_dir().join(format!("nereid-tls-net-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "nereid test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
        Pki {
            dir,
            ca: ca_cert.der().clone(),
        }
    }

    fn server(&self) -> TlsConfig {
        TlsConfig {
            cert: self.dir.join("server.pem"),
            key: self.dir.join("server.key"),
            client_ca: None,
        }
    }

    /// A TLS client connection to `addr` offering `alpn`.
    fn connect(
        &self,
        addr: SocketAddr,
        alpn: &[&[u8]],
    ) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let conn = rustls::ClientConnection::new(
            Arc::new(config),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        rustls::StreamOwned::new(conn, sock)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn server() -> Arc<Server> {
    let options = ServerOptions {
        manager: ManagerOptions {
            repositories: vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("model_repository")],
            control_mode: ControlMode::Explicit,
            startup_models: vec!["simple".to_owned(), "identity_uint8".to_owned()],
            ..ManagerOptions::default()
        },
        ..ServerOptions::default()
    };
    let server = Arc::new(Server::new(options).unwrap());
    server.start().unwrap();
    server
}

/// Reads one HTTP/1.1 response with a Content-Length body.
fn read_response(stream: &mut impl Read) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk).unwrap();
                assert!(n > 0, "the body ended early");
                buf.extend_from_slice(&chunk[..n]);
            }
            return (head, buf[end + 4..end + 4 + length].to_vec());
        }
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "the connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn https_on_the_http_port() {
    let pki = Pki::new("https");
    let server = server();
    let http = HttpServer::start(
        HttpConfig {
            address: "127.0.0.1".to_owned(),
            port: 0,
            threads: 1,
            tls: Some(pki.server()),
            ..HttpConfig::default()
        },
        Arc::new(RestService::new(Arc::clone(&server))),
    )
    .unwrap();
    let mut tls = pki.connect(http.local_addr(), &[b"h2", b"http/1.1"]);
    tls.write_all(b"GET /v2/health/ready HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let (head, _) = read_response(&mut tls);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));

    // Keep-alive on the same TLS connection, with 4 MiB each way: more
    // than rustls buffers at once.
    let n = 4 << 20;
    let body = format!(
        r#"{{"inputs":[{{"name":"INPUT0","shape":[1,{n}],"datatype":"UINT8","parameters":{{"binary_data_size":{n}}}}}],"outputs":[{{"name":"OUTPUT0","parameters":{{"binary_data":true}}}}]}}"#
    );
    let request = format!(
        "POST /v2/models/identity_uint8/infer HTTP/1.1\r\nHost: localhost\r\n\
         Inference-Header-Content-Length: {}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len(),
        body.len() + n
    );
    tls.write_all(request.as_bytes()).unwrap();
    tls.write_all(&vec![5u8; n]).unwrap();
    let (head, reply) = read_response(&mut tls);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(reply.len() > n && reply[reply.len() - n..].iter().all(|&b| b == 5));

    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(http.local_addr()).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain
        .write_all(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/1.1 200"));

    http.shutdown(Instant::now() + Duration::from_secs(1));
    server.shutdown();
}

#[test]
fn grpc_port_negotiates_h2() {
    let pki = Pki::new("h2");
    let server = server();
    let grpc = GrpcServer::start(
        GrpcServerConfig {
            address: "127.0.0.1".to_owned(),
            port: 0,
            threads: 1,
            tls: Some(pki.server()),
            ..GrpcServerConfig::default()
        },
        GrpcService::new(Arc::clone(&server), GrpcConfig::default()),
    )
    .unwrap();
    let mut tls = pki.connect(grpc.local_addr(), &[b"h2"]);
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    // The server's preface: a SETTINGS frame.
    let mut head = [0u8; 9];
    tls.read_exact(&mut head).unwrap();
    assert_eq!(head[3], 4, "SETTINGS");
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"h2"[..]));
    grpc.shutdown(Instant::now() + Duration::from_secs(1));
    server.shutdown();
}

#[test]
fn unusable_certificates_stop_startup() {
    let pki = Pki::new("bad");
    let server = server();
    let missing = TlsConfig {
        cert: pki.dir.join("nope.pem"),
        ..pki.server()
    };
    let err = HttpServer::start(
        HttpConfig {
            address: "127.0.0.1".to_owned(),
            port: 0,
            tls: Some(missing.clone()),
            ..HttpConfig::default()
        },
        Arc::new(RestService::new(Arc::clone(&server))),
    )
    .unwrap_err();
    assert!(err.to_string().contains("nope.pem"), "{err}");
    let swapped = TlsConfig {
        cert: pki.dir.join("server.key"),
        key: pki.dir.join("server.pem"),
        client_ca: None,
    };
    let err = GrpcServer::start(
        GrpcServerConfig {
            address: "127.0.0.1".to_owned(),
            port: 0,
            tls: Some(swapped),
            ..GrpcServerConfig::default()
        },
        GrpcService::new(Arc::clone(&server), GrpcConfig::default()),
    )
    .unwrap_err();
    assert!(err.to_string().contains("server certificate"), "{err}");
    server.shutdown();
}
