//! HTTP/1.1 front end over real sockets: a small echo service behind
//! `net::HttpServer`, driven by plain `std::net::TcpStream` clients.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flate2::Compression;
use nereid::net::{HttpConfig, HttpServer, HttpServerHandle, HttpService, Responder};
use nereid::protocol::http1::{self, Request, Response};

/// Echoes bodies back, naming the thread that handled them; a few paths
/// exercise slow, dropped, panicking, cancelled and loop-blocking requests.
struct Echo {
    cancelled: mpsc::SyncSender<bool>,
    handled: AtomicUsize,
    /// `/block` says it has started here, then waits for `release`.
    blocked: mpsc::SyncSender<()>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl HttpService for Echo {
    fn handle(&self, request: Request, responder: Responder) {
        let order = self.handled.fetch_add(1, Ordering::Relaxed);
        match request.path.as_str() {
            "/slow" => {
                let ms: u64 = request
                    .query
                    .as_deref()
                    .and_then(|q| q.strip_prefix("ms="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(100);
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(ms));
                    responder.respond(Response::new(200).with_body(format!("slept {ms}")));
                });
            }
            "/wait-cancel" => {
                let tx = self.cancelled.clone();
                std::thread::spawn(move || {
                    let start = Instant::now();
                    while !responder.is_cancelled() && start.elapsed() < Duration::from_secs(10) {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    let _ = tx.send(responder.is_cancelled());
                    responder.respond(Response::new(200));
                });
            }
            "/big" => {
                let body = Bytes::from(vec![b'x'; 8 * 1024 * 1024]);
                responder.respond(
                    Response::new(200)
                        .with_body(body.slice(..4 * 1024 * 1024))
                        .with_body(body),
                );
            }
            "/drop" => drop(responder),
            "/panic" => panic!("the echo service was asked to panic"),
            "/block" => {
                // Holds the thread that runs it (an event loop) until the
                // test lets go.
                let _ = self.blocked.send(());
                let _ = self.release.lock().unwrap().recv();
                responder.respond(Response::new(200).with_body("unblocked"));
            }
            _ => {
                let thread = std::thread::current().name().unwrap_or("").to_owned();
                let mut response = Response::new(200)
                    .with_header("X-Method", request.method.clone())
                    .with_header("X-Path", request.path.clone())
                    .with_header("X-Thread", thread)
                    .with_header("X-Order", order.to_string());
                if let Some(ct) = request.content_type() {
                    response = response.with_header("Content-Type", ct.to_owned());
                }
                let response = response.with_body(request.body);
                if request.path == "/compressed" {
                    responder.respond_compressed(response);
                } else {
                    responder.respond(response);
                }
            }
        }
    }
}

struct Server {
    handle: Option<HttpServerHandle>,
    addr: SocketAddr,
    cancelled: mpsc::Receiver<bool>,
    service: Arc<Echo>,
    blocked: mpsc::Receiver<()>,
    release: mpsc::SyncSender<()>,
}

impl Server {
    fn start() -> Server {
        Server::with(http1::Config::default())
    }

    fn with(http1: http1::Config) -> Server {
        Server::with_loops(http1, 2)
    }

    fn with_loops(http1: http1::Config, threads: usize) -> Server {
        let (tx, rx) = mpsc::sync_channel(16);
        let (blocked_tx, blocked) = mpsc::sync_channel(16);
        let (release, release_rx) = mpsc::sync_channel(16);
        let service = Arc::new(Echo {
            cancelled: tx,
            handled: AtomicUsize::new(0),
            blocked: blocked_tx,
            release: Mutex::new(release_rx),
        });
        let config = HttpConfig {
            address: "127.0.0.1".to_owned(),
            port: 0,
            threads,
            http1,
            tls: None,
        };
        let handle = HttpServer::start(config, service.clone()).expect("server starts");
        let addr = handle.local_addr();
        assert_ne!(addr.port(), 0);
        Server {
            handle: Some(handle),
            addr,
            cancelled: rx,
            service,
            blocked,
            release,
        }
    }

    fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Waits until the service has been handed `n` requests in all.
    fn wait_handled(&self, n: usize) {
        let start = Instant::now();
        while self.service.handled.load(Ordering::Relaxed) < n {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the service never got request {n}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, data: &[u8]) {
        self.stream.write_all(data).expect("write");
    }

    /// Reads one response; `None` when the server closed first.
    fn read_response(&mut self) -> Option<Resp> {
        loop {
            if let Some((resp, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                return Some(resp);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    /// Whether the server closes the connection (EOF or reset) with nothing
    /// more sent.
    fn closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut chunk = [0u8; 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

fn parse(data: &[u8]) -> Option<(Resp, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(data).expect("well-formed response") {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return None,
    };
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    if data.len() < head + len {
        return None;
    }
    let resp = Resp {
        status: resp.code.unwrap(),
        headers,
        body: data[head..head + len].to_vec(),
    };
    Some((resp, head + len))
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

#[test]
fn keep_alive_serves_many_requests() {
    let server = Server::start();
    let mut c = server.client();
    for i in 0..20 {
        let body = format!("request {i}");
        c.send(&post("/echo", body.as_bytes()));
        let resp = c.read_response().expect("a response");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, body.as_bytes());
        assert_eq!(resp.header("x-method"), Some("POST"));
        assert!(resp.header("connection").is_none());
    }
}

#[test]
fn pipelined_requests_answered_in_order() {
    let server = Server::start();
    let mut c = server.client();
    let mut batch = b"GET /slow?ms=200 HTTP/1.1\r\n\r\n".to_vec();
    batch.extend_from_slice(&post("/echo", b"second"));
    batch.extend_from_slice(b"GET /slow?ms=10 HTTP/1.1\r\n\r\n");
    c.send(&batch);
    let bodies: Vec<Vec<u8>> = (0..3).map(|_| c.read_response().unwrap().body).collect();
    assert_eq!(
        bodies,
        vec![
            b"slept 200".to_vec(),
            b"second".to_vec(),
            b"slept 10".to_vec()
        ]
    );
}

#[test]
fn client_half_close_is_seen_after_a_request_emptied_the_socket() {
    let server = Server::start();
    // The FIN comes well after the request was read in full: the server
    // must still notice it and close.
    let mut c = server.client();
    c.send(&post("/echo", b"one"));
    assert_eq!(c.read_response().unwrap().body, b"one");
    std::thread::sleep(Duration::from_millis(50));
    c.stream.shutdown(Shutdown::Write).unwrap();
    assert!(c.closed());
    // The FIN right behind the request: answered, then closed.
    let mut c = server.client();
    c.send(&post("/echo", b"two"));
    c.stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(c.read_response().unwrap().body, b"two");
    assert!(c.closed());
}

#[test]
fn slow_client_one_byte_per_write() {
    let server = Server::start();
    let mut c = server.client();
    let req = post("/echo", b"drip");
    for b in &req {
        c.send(std::slice::from_ref(b));
        std::thread::sleep(Duration::from_millis(1));
    }
    let resp = c.read_response().unwrap();
    assert_eq!(resp.body, b"drip");
}

#[test]
fn disconnect_mid_body_and_cancellation() {
    let server = Server::start();
    {
        let mut c = server.client();
        c.send(b"POST /echo HTTP/1.1\r\nContent-Length: 100\r\n\r\nonly ten b");
    }
    // The server is unharmed.
    let mut c = server.client();
    c.send(&post("/echo", b"fine"));
    assert_eq!(c.read_response().unwrap().body, b"fine");

    // A client leaving while its request is in flight cancels it.
    {
        let mut c = server.client();
        c.send(b"GET /wait-cancel HTTP/1.1\r\n\r\n");
        server.wait_handled(2);
    }
    let cancelled = server
        .cancelled
        .recv_timeout(Duration::from_secs(5))
        .unwrap();
    assert!(cancelled, "the cancel flag is set on disconnect");
}

#[test]
fn expect_100_continue() {
    let server = Server::start();
    let mut c = server.client();
    c.send(b"POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    let interim = c.read_response().unwrap();
    assert_eq!(interim.status, 100);
    c.send(b"hello");
    let resp = c.read_response().unwrap();
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"hello"[..]));
}

#[test]
fn chunked_request_body() {
    let server = Server::start();
    let mut c = server.client();
    c.send(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnere\r\n");
    std::thread::sleep(Duration::from_millis(20));
    c.send(b"2;x=y\r\nid\r\n0\r\nTrailer: ok\r\n\r\n");
    assert_eq!(c.read_response().unwrap().body, b"nereid");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn post_with(path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

#[test]
fn gzip_request_and_response() {
    let server = Server::start();
    let mut c = server.client();
    let plain = br#"{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[4],"data":[1,2,3,4]}]}"#
        .repeat(20);
    let gz = gzip(&plain);
    let headers = "Content-Encoding: gzip\r\nAccept-Encoding: deflate;q=0.5, gzip\r\n\
                   Content-Type: application/json\r\n";
    // The service compresses this answer: it goes out gzip.
    c.send(&post_with("/compressed", headers, &gz));
    let resp = c.read_response().unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-encoding"), Some("gzip"));
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&resp.body[..])
        .read_to_end(&mut decoded)
        .unwrap();
    assert_eq!(decoded, plain);
    // It does not compress this one, Accept-Encoding or not.
    c.send(&post_with("/echo", headers, &gz));
    let resp = c.read_response().unwrap();
    assert_eq!(resp.header("content-encoding"), None);
    assert_eq!(resp.body, plain);
}

#[test]
fn compressed_and_large_bodies_are_handled_off_the_loop() {
    let server = Server::start();
    let mut c = server.client();
    c.send(&post("/echo", b"small"));
    let resp = c.read_response().unwrap();
    assert!(
        resp.header("x-thread").unwrap().starts_with("http-loop-"),
        "{:?}",
        resp.header("x-thread")
    );
    c.send(&post_with(
        "/echo",
        "Content-Encoding: gzip\r\n",
        &gzip(b"zipped"),
    ));
    let resp = c.read_response().unwrap();
    assert_eq!(resp.body, b"zipped");
    assert!(resp.header("x-thread").unwrap().starts_with("http-decode-"));
    let large = vec![b'L'; 300 * 1024];
    c.send(&post("/echo", &large));
    let resp = c.read_response().unwrap();
    assert_eq!(resp.body, large);
    assert!(resp.header("x-thread").unwrap().starts_with("http-decode-"));
}

#[test]
fn requests_reach_the_service_in_order_across_the_decoding_threads() {
    let server = Server::start();
    let mut c = server.client();
    let large = vec![b'L'; 300 * 1024];
    let mut pipelined = post("/echo", &large);
    pipelined.extend_from_slice(&post_with(
        "/echo",
        "Content-Encoding: gzip\r\n",
        &gzip(b"z"),
    ));
    pipelined.extend_from_slice(&post("/echo", b"small"));
    c.send(&pipelined);
    let order: Vec<usize> = (0..3)
        .map(|_| {
            let resp = c.read_response().unwrap();
            resp.header("x-order").unwrap().parse().unwrap()
        })
        .collect();
    assert!(order[0] < order[1] && order[1] < order[2], "{order:?}");
}

#[test]
fn a_panic_on_a_decoding_thread_answers_500_and_the_connection_goes_on() {
    let server = Server::start();
    let mut c = server.client();
    // Compressed bodies are decoded (and handled) on the decoding threads.
    for _ in 0..12 {
        c.send(&post_with(
            "/panic",
            "Content-Encoding: gzip\r\n",
            &gzip(b"p"),
        ));
        assert_eq!(c.read_response().unwrap().status, 500);
    }
    // More panics than there are decoding threads: they all survived, and
    // this connection's backlog is not stuck.
    c.send(&post_with(
        "/echo",
        "Content-Encoding: gzip\r\n",
        &gzip(b"after"),
    ));
    let resp = c.read_response().unwrap();
    assert_eq!((resp.status, &resp.body[..]), (200, &b"after"[..]));
}

#[test]
fn decoded_size_limit_stops_a_bomb() {
    let server = Server::with(http1::Config {
        max_decoded_body_bytes: 1024 * 1024,
        ..http1::Config::default()
    });
    let mut c = server.client();
    let bomb = gzip(&vec![0u8; 64 * 1024 * 1024]);
    assert!(bomb.len() < 128 * 1024);
    c.send(&post_with("/echo", "Content-Encoding: gzip\r\n", &bomb));
    let resp = c.read_response().unwrap();
    assert_eq!(resp.status, 413);
    let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("decompressed request body of 1048577 bytes exceeds the limit of 1048576"),
        "{v}"
    );
    // The body was read in full, so the connection goes on.
    c.send(&post_with(
        "/echo",
        "Content-Encoding: gzip\r\n",
        &gzip(b"fine"),
    ));
    assert_eq!(c.read_response().unwrap().body, b"fine");
    // A corrupt one is a 400.
    c.send(&post_with(
        "/echo",
        "Content-Encoding: deflate\r\n",
        b"not deflate",
    ));
    assert_eq!(c.read_response().unwrap().status, 400);
}

#[test]
fn trickled_body_is_cut_off_with_408() {
    let server = Server::with(http1::Config {
        body_timeout: Duration::from_millis(300),
        min_body_rate: 1024,
        ..http1::Config::default()
    });
    let mut c = server.client();
    c.send(b"POST /echo HTTP/1.1\r\nContent-Length: 100\r\n\r\nx");
    let start = Instant::now();
    // A byte now and then never counts as a stall, but earns next to no
    // time: the deadline holds.
    let writer = c.stream.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(100));
            if (&writer).write_all(b"x").is_err() {
                return;
            }
        }
    });
    let resp = c.read_response().expect("an answer before the body ends");
    assert_eq!(resp.status, 408);
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(start.elapsed() < Duration::from_secs(4));
    assert!(c.closed());
    trickle.join().unwrap();
}

#[test]
fn head_keeps_the_length_and_drops_the_body() {
    let server = Server::start();
    let mut c = server.client();
    c.send(b"HEAD /echo HTTP/1.1\r\n\r\nPOST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\nok");
    // Parsed by hand: a HEAD answer has a Content-Length and no body.
    let mut raw = Vec::new();
    while !String::from_utf8_lossy(&raw).contains("\r\n\r\nHTTP/1.1 200") {
        let mut chunk = [0u8; 4096];
        let n = c.stream.read(&mut chunk).unwrap();
        assert!(n > 0);
        raw.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("X-Method: HEAD"), "{head}");
    assert!(rest.starts_with("HTTP/1.1 200"), "{rest}");
}

#[test]
fn oversize_body_is_refused_with_413() {
    let server = Server::with(http1::Config {
        max_body_bytes: 1024,
        ..http1::Config::default()
    });
    let mut c = server.client();
    c.send(b"POST /echo HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n");
    // Keep sending part of the body, as a client that does not wait would.
    let _ = c.stream.write_all(&[0u8; 4096]);
    let resp = c.read_response().unwrap();
    assert_eq!(resp.status, 413);
    assert_eq!(resp.header("connection"), Some("close"));
    let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(
        v["error"],
        "request body of 1000000 bytes exceeds the limit of 1024 bytes"
    );
    assert!(c.closed());
}

#[test]
fn both_framings_chunked_wins_then_close() {
    let server = Server::start();
    let mut c = server.client();
    c.send(
        b"POST /echo HTTP/1.1\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n\
          6\r\nnereid\r\n0\r\n\r\n",
    );
    let resp = c.read_response().unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"nereid");
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(c.closed());
}

#[test]
fn too_many_chunks_gets_400_and_close() {
    let server = Server::start();
    let mut c = server.client();
    let mut req = b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(&b"1\r\nA\r\n".repeat(http1::MAX_CHUNKS + 1));
    req.extend_from_slice(b"0\r\n\r\n");
    c.send(&req);
    let resp = c.read_response().unwrap();
    assert_eq!(resp.status, 400);
    let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("Chunked request body exceeds maximum of 65536 non-empty chunks."),
        "{v}"
    );
    assert!(c.closed());
}

#[test]
fn malformed_request_gets_400_and_close() {
    let server = Server::start();
    let mut c = server.client();
    c.send(b"THIS IS NOT HTTP\r\n\r\n");
    let resp = c.read_response().unwrap();
    assert_eq!(resp.status, 400);
    assert!(c.closed());
}

#[test]
fn dropped_and_panicking_handlers_answer_500() {
    let server = Server::start();
    let mut c = server.client();
    c.send(b"GET /drop HTTP/1.1\r\n\r\n");
    assert_eq!(c.read_response().unwrap().status, 500);
    c.send(b"GET /panic HTTP/1.1\r\n\r\n");
    assert_eq!(c.read_response().unwrap().status, 500);
    c.send(&post("/echo", b"still here"));
    assert_eq!(c.read_response().unwrap().body, b"still here");
}

#[test]
fn large_response_to_a_slow_reader() {
    let server = Server::start();
    let mut c = server.client();
    c.send(b"GET /big HTTP/1.1\r\n\r\n");
    std::thread::sleep(Duration::from_millis(200));
    let resp = c.read_response().unwrap();
    assert_eq!(resp.body.len(), 12 * 1024 * 1024);
    assert!(resp.body.iter().all(|&b| b == b'x'));
}

#[test]
fn idle_timeout_closes_the_connection() {
    let server = Server::with(http1::Config {
        idle_timeout: Duration::from_millis(200),
        header_timeout: Duration::from_millis(200),
        ..http1::Config::default()
    });
    let mut c = server.client();
    c.send(&post("/echo", b"x"));
    assert_eq!(c.read_response().unwrap().status, 200);
    let start = Instant::now();
    assert!(c.closed());
    assert!(start.elapsed() < Duration::from_secs(5));

    // A head that never completes gets 408.
    let mut c = server.client();
    c.send(b"GET / HTTP/1.1\r\nX-Slow: ");
    assert_eq!(c.read_response().unwrap().status, 408);
}

#[test]
fn many_concurrent_clients() {
    let server = Server::start();
    let addr = server.addr;
    let threads: Vec<_> = (0..16)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..25 {
                    let body = format!("{t}-{i}");
                    c.send(&post("/echo", body.as_bytes()));
                    assert_eq!(c.read_response().unwrap().body, body.as_bytes());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(server.service.handled.load(Ordering::Relaxed), 16 * 25);
}

#[test]
fn shutdown_drains_in_flight_requests() {
    let mut server = Server::start();
    let mut busy = server.client();
    busy.send(b"GET /slow?ms=300 HTTP/1.1\r\n\r\n");
    let mut idle = server.client();
    idle.send(&post("/echo", b"x"));
    assert_eq!(idle.read_response().unwrap().status, 200);
    server.wait_handled(2);

    let handle = server.handle.take().unwrap();
    let start = Instant::now();
    let stopper =
        std::thread::spawn(move || handle.shutdown(Instant::now() + Duration::from_secs(5)));
    let resp = busy
        .read_response()
        .expect("the in-flight request is answered");
    assert_eq!(resp.body, b"slept 300");
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(busy.closed());
    assert!(idle.closed(), "idle keep-alive connections are closed");
    stopper.join().unwrap();
    assert!(start.elapsed() < Duration::from_secs(4));
    assert!(
        TcpStream::connect(server.addr).is_err(),
        "the port is closed"
    );
}

/// A request the client sent just before the shutdown, still in the
/// socket because the loop was busy, is read and answered (with
/// `Connection: close`) rather than lost with the connection.
#[test]
fn shutdown_answers_a_request_still_in_the_socket() {
    let mut server = Server::with_loops(http1::Config::default(), 2);
    // Connections are dealt to the two loops in turn: `busy` and `late`
    // share loop 0, `other` is on loop 1.
    let mut busy = server.client();
    busy.send(&post("/echo", b"1"));
    assert_eq!(busy.read_response().unwrap().status, 200);
    let mut other = server.client();
    other.send(&post("/echo", b"2"));
    assert_eq!(other.read_response().unwrap().status, 200);
    let mut late = server.client();
    late.send(&post("/echo", b"3"));
    assert_eq!(late.read_response().unwrap().status, 200);

    // Loop 0 is held inside a handler; `late` sends meanwhile.
    busy.send(b"GET /block HTTP/1.1\r\n\r\n");
    server.blocked.recv().unwrap();
    late.send(&post("/echo", b"sent before the shutdown"));
    let handle = server.handle.take().unwrap();
    let stopper =
        std::thread::spawn(move || handle.shutdown(Instant::now() + Duration::from_secs(10)));
    // Loop 1 closing its idle connection means the shutdown has been posted
    // to both loops (loop 0 first); then loop 0 is let go.
    assert!(other.closed());
    server.release.send(()).unwrap();

    let resp = busy
        .read_response()
        .expect("the blocked request is answered");
    assert_eq!(resp.body, b"unblocked");
    let resp = late
        .read_response()
        .expect("the request in the socket is answered");
    assert_eq!(resp.body, b"sent before the shutdown");
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(late.closed());
    stopper.join().unwrap();
}

#[test]
fn shutdown_deadline_cuts_off_slow_requests() {
    let mut server = Server::start();
    let mut busy = server.client();
    busy.send(b"GET /wait-cancel HTTP/1.1\r\n\r\n");
    server.wait_handled(1);
    let start = Instant::now();
    server
        .handle
        .take()
        .unwrap()
        .shutdown(Instant::now() + Duration::from_millis(200));
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(busy.closed());
    assert!(
        server
            .cancelled
            .recv_timeout(Duration::from_secs(5))
            .unwrap()
    );
}

/// curl as an independent client: a large upload (curl sends
/// `Expect: 100-continue` for it), a chunked upload, a compressed response
/// and HTTP/1.0. Needs curl (scripts/test.sh installs it); without it the
/// test fails, saying so, rather than passing unrun.
#[test]
fn curl_interop() {
    assert!(
        std::process::Command::new("curl")
            .arg("--version")
            .output()
            .is_ok(),
        "this test needs the curl command (Debian: apt-get install curl)"
    );
    let server = Server::start();
    let url = format!("http://{}/echo", server.addr);
    let dir = std::env::temp_dir().join(format!("nereid-curl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("upload.bin");
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&file, &payload).unwrap();
    let data = format!("@{}", file.display());
    let curl = |extra: &[&str]| -> Vec<u8> {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "20"])
            .args(extra)
            .arg(&url)
            .output()
            .expect("curl runs");
        assert!(
            out.status.success(),
            "curl {extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    assert_eq!(curl(&["--data-binary", &data]), payload);
    assert_eq!(
        curl(&["--data-binary", &data, "-H", "Transfer-Encoding: chunked"]),
        payload
    );
    assert_eq!(curl(&["--data-binary", &data, "--compressed"]), payload);
    assert_eq!(curl(&["--http1.0", "--data-binary", "short"]), b"short");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn binding_errors_and_address_forms() {
    let server = Server::start();
    let taken = HttpConfig {
        address: "127.0.0.1".to_owned(),
        port: server.addr.port(),
        threads: 1,
        http1: http1::Config::default(),
        tls: None,
    };
    let err = HttpServer::start(taken, server.service.clone()).unwrap_err();
    assert!(err.to_string().contains("cannot bind"), "{err}");

    let bad = HttpConfig {
        address: "not an address".to_owned(),
        port: 0,
        ..HttpConfig::default()
    };
    assert!(HttpServer::start(bad, server.service.clone()).is_err());

    let named = HttpConfig {
        address: "localhost".to_owned(),
        port: 0,
        threads: 1,
        http1: http1::Config::default(),
        tls: None,
    };
    let handle = HttpServer::start(named, server.service.clone()).unwrap();
    assert!(handle.local_addr().ip().is_loopback());
    let mut c = Client::connect(handle.local_addr());
    c.send(&post("/echo", b"by name"));
    assert_eq!(c.read_response().unwrap().body, b"by name");
    handle.shutdown(Instant::now() + Duration::from_secs(1));
}
