//! Connection-level tests: a test client and the server connection joined
//! in memory ([`Pair`]), frames described with the builder vocabulary,
//! time simulated.

use std::time::Duration;

use bytes::Bytes;

use super::connection::{Config, Event, SendError, header};
use super::error::ErrorCode as E;
use super::frame::{
    DEFAULT_WINDOW_SIZE, Frame, MAX_WINDOW_SIZE, PREFACE, Settings, StreamId, WindowUpdate,
};
use super::stream::State;
use super::testing::{DataExt, END_HEADERS, Got, Pair, frames};

fn sid(n: u32) -> StreamId {
    StreamId::new(n)
}

fn pair() -> Pair {
    Pair::new(Config::default())
}

/// The only event, which must be a request on `id`.
fn expect_request(p: &mut Pair, id: u32) -> Vec<(String, String)> {
    let events = p.events();
    match events.as_slice() {
        [
            Event::Request {
                stream, headers, ..
            },
        ] if *stream == sid(id) => headers.clone(),
        other => panic!("expected a request on {id}, got {other:?}"),
    }
}

fn data_frames(got: &[Got]) -> Vec<(u32, usize, bool)> {
    got.iter()
        .filter_map(|g| match g {
            Got::Data {
                stream,
                data,
                end_stream,
            } => Some((*stream, data.len(), *end_stream)),
            _ => None,
        })
        .collect()
}

#[test]
fn server_preface_announces_our_settings() {
    let mut p = Pair::raw(Config::default());
    p.send_bytes(PREFACE);
    let got = p.recv();
    let Some(Got::Frame(Frame::Settings(s))) = got.first() else {
        panic!("first frame is not SETTINGS: {got:?}");
    };
    let c = Config::default();
    assert_eq!(s.max_concurrent_streams, Some(c.max_concurrent_streams));
    assert_eq!(s.initial_window_size, Some(c.stream_window));
    assert_eq!(s.max_frame_size, Some(c.max_frame_size));
    assert_eq!(s.max_header_list_size, Some(c.max_header_list_size));
    assert_eq!(
        got[1],
        Got::Frame(Frame::WindowUpdate(WindowUpdate::new(
            StreamId::ZERO,
            c.connection_window - DEFAULT_WINDOW_SIZE
        )))
    );
}

#[test]
fn grpc_unary_call() {
    let mut p = pair();
    p.send(frames::headers(1).grpc("/inference.GRPCInferenceService/ServerLive"));
    let headers = expect_request(&mut p, 1);
    assert_eq!(header(&headers, ":method"), Some("POST"));
    assert_eq!(
        header(&headers, ":path"),
        Some("/inference.GRPCInferenceService/ServerLive")
    );
    assert_eq!(header(&headers, "te"), Some("trailers"));
    assert_eq!(headers[0].0, ":method", "pseudo-headers come first");
    assert_eq!(p.server.stream_state(sid(1)), State::Open);

    p.send(frames::data(1, &b"\0\0\0\0\0"[..]).eos());
    assert_eq!(
        p.events(),
        [Event::Data {
            stream: sid(1),
            data: Bytes::from_static(b"\0\0\0\0\0"),
            end_stream: true
        }]
    );
    assert_eq!(p.server.stream_state(sid(1)), State::HalfClosedRemote);

    let now = p.now;
    p.server
        .send_headers(
            sid(1),
            200,
            [("Content-Type", "application/grpc")],
            false,
            now,
        )
        .unwrap();
    p.server
        .send_data(
            sid(1),
            Bytes::from_static(b"\0\0\0\0\x02\x08\x01"),
            false,
            now,
        )
        .unwrap();
    p.server
        .send_trailers(sid(1), [("grpc-status", "0"), ("grpc-message", "")], now)
        .unwrap();
    let got = p.recv();
    assert_eq!(
        got,
        [
            Got::Headers {
                stream: 1,
                fields: vec![
                    (":status".into(), "200".into()),
                    ("content-type".into(), "application/grpc".into())
                ],
                end_stream: false
            },
            Got::Data {
                stream: 1,
                data: Bytes::from_static(b"\0\0\0\0\x02\x08\x01"),
                end_stream: false
            },
            Got::Headers {
                stream: 1,
                fields: vec![
                    ("grpc-status".into(), "0".into()),
                    ("grpc-message".into(), "".into())
                ],
                end_stream: true
            },
        ]
    );
    assert_eq!(p.server.stream_state(sid(1)), State::Closed);
    assert_eq!(p.server.open_streams(), 0);
    assert_eq!(
        p.server
            .send_data(sid(1), Bytes::from_static(b"x"), true, now),
        Err(SendError::UnknownStream)
    );
}

#[test]
fn trailers_only_response_and_send_errors() {
    let mut p = pair();
    p.send(frames::headers(1).grpc("/svc/M").eos());
    expect_request(&mut p, 1);
    let now = p.now;
    assert_eq!(
        p.server
            .send_data(sid(1), Bytes::from_static(b"x"), false, now),
        Err(SendError::HeadersNotSent)
    );
    assert_eq!(
        p.server.send_trailers(sid(1), [("grpc-status", "0")], now),
        Err(SendError::HeadersNotSent)
    );
    p.server
        .send_headers(
            sid(1),
            200,
            [
                ("content-type", "application/grpc"),
                ("grpc-status", "12"),
                ("grpc-message", "unknown method\r\ninjected: yes"),
                ("connection", "close"),
                (":status", "500"),
            ],
            true,
            now,
        )
        .unwrap();
    assert_eq!(
        p.server.send_headers(sid(1), 200, [("a", "b")], true, now),
        Err(SendError::UnknownStream)
    );
    let got = p.recv();
    assert_eq!(
        got,
        [Got::Headers {
            stream: 1,
            fields: vec![
                (":status".into(), "200".into()),
                ("content-type".into(), "application/grpc".into()),
                ("grpc-status".into(), "12".into()),
                (
                    "grpc-message".into(),
                    "unknown method  injected: yes".into()
                ),
            ],
            end_stream: true
        }]
    );
}

#[test]
fn send_after_end_and_double_headers_are_refused() {
    // The client's window is closed, so what is sent stays queued.
    let mut p = Pair::with_settings(
        Config::default(),
        Settings {
            initial_window_size: Some(0),
            ..frames::settings()
        },
    );
    p.send(frames::headers(1).grpc("/svc/M"));
    expect_request(&mut p, 1);
    let now = p.now;
    p.server
        .send_headers(sid(1), 200, [("a", "b")], false, now)
        .unwrap();
    assert_eq!(
        p.server.send_headers(sid(1), 200, [("a", "b")], false, now),
        Err(SendError::HeadersAlreadySent)
    );
    p.server
        .send_data(sid(1), Bytes::from_static(b"x"), true, now)
        .unwrap();
    assert_eq!(
        p.server.send_trailers(sid(1), [("a", "b")], now),
        Err(SendError::StreamEnded)
    );
}

#[test]
fn request_trailers_padding_priority_and_continuation() {
    let mut p = pair();
    p.send(
        frames::headers(3)
            .grpc("/svc/Stream")
            .field("grpc-timeout", "10S")
            .field("x-long", &"v".repeat(300))
            .padded(7)
            .priority(0)
            .split(10),
    );
    let headers = expect_request(&mut p, 3);
    assert_eq!(header(&headers, "grpc-timeout"), Some("10S"));
    assert_eq!(header(&headers, "x-long").map(str::len), Some(300));

    p.send(frames::data(3, &b"hello"[..]).padded(20));
    p.send(frames::headers(3).field("x-checksum", "abc").eos());
    assert_eq!(
        p.events(),
        [
            Event::Data {
                stream: sid(3),
                data: Bytes::from_static(b"hello"),
                end_stream: false
            },
            Event::Trailers {
                stream: sid(3),
                headers: vec![("x-checksum".into(), "abc".into())]
            },
        ]
    );
    assert_eq!(p.server.stream_state(sid(3)), State::HalfClosedRemote);
}

#[test]
fn bad_preface_is_a_protocol_error() {
    let mut p = Pair::raw(Config::default());
    p.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    p.expect_goaway(E::PROTOCOL_ERROR);
    assert!(p.server.wants_linger());
    assert_eq!(p.server.error().map(|e| e.code), Some(E::PROTOCOL_ERROR));
}

#[test]
fn preface_must_be_followed_by_settings() {
    let mut p = Pair::raw(Config::default());
    p.send_bytes(PREFACE);
    p.send(frames::ping(*b"12345678"));
    p.expect_goaway(E::PROTOCOL_ERROR);
}

#[test]
fn oversized_frame_is_a_frame_size_error() {
    let mut p = pair();
    let big = vec![0u8; Config::default().max_frame_size as usize + 1];
    p.send(frames::headers(1).grpc("/svc/M"));
    p.send(frames::data(1, big));
    p.expect_goaway(E::FRAME_SIZE_ERROR);
    // The open stream is reported reset.
    let events = p.events();
    assert!(events.contains(&Event::Reset {
        stream: sid(1),
        code: E::FRAME_SIZE_ERROR
    }));
}

#[test]
fn frames_on_idle_streams_are_protocol_errors() {
    for out in [
        frames::data(1, &b"x"[..]).into(),
        frames::window_update(1, 5).into(),
        frames::reset(1, E::CANCEL).into(),
        frames::continuation(1, &b"\x82"[..]).into(),
        frames::raw(0x5, END_HEADERS, 1, b"\0\0\0\x02\x82"),
    ] {
        let mut p = pair();
        p.send(out);
        p.expect_goaway(E::PROTOCOL_ERROR);
    }
    // HEADERS on an even stream.
    let mut p = pair();
    p.send(frames::headers(2).grpc("/svc/M"));
    p.expect_goaway(E::PROTOCOL_ERROR);
}

#[test]
fn stream_identifiers_only_go_up() {
    let mut p = pair();
    p.send(frames::headers(5).grpc("/svc/M").eos());
    expect_request(&mut p, 5);
    p.send(frames::headers(3).grpc("/svc/M").eos());
    p.expect_goaway(E::PROTOCOL_ERROR);
}

#[test]
fn reusing_a_finished_stream_is_stream_closed() {
    let mut p = pair();
    p.send(frames::headers(1).grpc("/svc/M").eos());
    expect_request(&mut p, 1);
    let now = p.now;
    p.server
        .send_headers(sid(1), 200, [("grpc-status", "0")], true, now)
        .unwrap();
    p.recv();
    p.send(frames::headers(1).grpc("/svc/M").eos());
    p.expect_goaway(E::STREAM_CLOSED);
}

#[test]
fn headers_or_data_on_half_closed_remote_are_stream_closed() {
    let mut p = pair();
    p.send(frames::headers(1).grpc("/svc/M").eos());
    expect_request(&mut p, 1);
    p.send(frames::headers(1).field("x", "y").eos());
    p.expect_reset(1, E::STREAM_CLOSED);
    assert_eq!(
        p.events(),
        [Event::Reset {
            stream: sid(1),
            code: E::STREAM_CLOSED
        }]
    );

    p.send(frames::headers(3).grpc("/svc/M").eos());
    expect_request(&mut p, 3);
    p.send(frames::data(3, &b"late"[..]));
    p.expect_reset(3, E::STREAM_CLOSED);
    // The stream's frames that follow our reset are ignored.
    p.send(frames::data(3, &b"later"[..]));
    assert!(p.recv().is_empty());
    // Other streams are unaffected.
    p.send(frames::headers(5).grpc("/svc/M").eos());
    p.events();
    assert_eq!(p.server.stream_state(sid(5)), State::HalfClosedRemote);
}

#[test]
fn frames_after_a_client_reset() {
    let mut p = pair();
    p.send(frames::headers(1).grpc("/svc/M"));
    expect_request(&mut p, 1);
    p.send(frames::reset(1, E::CANCEL));
    assert_eq!(
        p.events(),
        [Event::Reset {
            stream: sid(1),
            code: E::CANCEL
        }]
    );
    let now = p.now;
    assert_eq!(
        p.server.send_headers(sid(1), 200, [("a", "b")], false, now),
        Err(SendError::UnknownStream)
    );
    // WINDOW_UPDATE, PRIORITY and RST_STREAM on a closed stream are fine.
    p.send(frames::window_update(1, 10));
    p.send(frames::priority(1, 0));
    p.send(frames::reset(1, E::CANCEL));
    assert!(p.recv().is_empty());
    // DATA after the client's own reset is a stream error.
    p.send(frames::data(1, &b"x"[..]));
    p.expect_reset(1, E::STREAM_CLOSED);
}

#[test]
fn window_overflow_is_a_flow_control_error() {
    let mut p = pair();
    p.send(frames::window_update(0, MAX_WINDOW_SIZE));
    p.expect_goaway(E::FLOW_CONTROL_ERROR);

    let mut p = pair();
    p.send(frames::headers(1).grpc("/svc/M"));
    expect_request(&mut p, 1);
    p.send(frames::window_update(1, MAX_WINDOW_SIZE));
    p.expect_reset(1, E::FLOW_CONTROL_ERROR);

    // A SETTINGS change that pushes an open stream's window over the top.
    let mut p = pair();
    p.send(frames::headers(1).grpc("/svc/M"));
    p.send(frames::window_update(
        1,
        MAX_WINDOW_SIZE - DEFAULT_WINDOW_SIZE,
    ));
    p.send(Settings {
        initial_window_size: Some(DEFAULT_WINDOW_SIZE + 1),
        ..frames::settings()
    });
    p.expect_goaway(E::FLOW_CONTROL_ERROR);

    // A zero increment.
    let mut p = pair();
    p.send(frames::raw(0x8, 0, 0, &[0, 0, 0, 0]));
    p.expect_goaway(E::PROTOCOL_ERROR);
}

#[test]
fn data_beyond_the_windows() {
    let config = Config {
        stream_window: 65_535,
        connection_window: 65_535 * 2,
        max_frame_size: 1 << 20,
        ..Config::default()
    };
    let mut p = Pair::new(config);
    p.send(frames::headers(1).grpc("/svc/M"));
    expect_request(&mut p, 1);
    p.send(frames::data(1, vec![0u8; 65_536]));
    p.expect_reset(1, E::FLOW_CONTROL_ERROR);

    // The rejected frame still counted against the connection window and
    // was given back, so the connection window is intact.
    p.send(frames::headers(3).grpc("/svc/M"));
    p.send(frames::headers(5).grpc("/svc/M"));
    p.events();
    p.send(frames::data(3, vec![0u8; 65_535]));
    p.send(frames::data(5, vec![0u8; 65_000]));
    assert_eq!(p.events().len(), 2);
    p.send(frames::data(5, vec![0u8; 600]));
    p.expect_goaway(E::FLOW_CONTROL_ERROR);
}

#[test]
fn push_promise_from_a_client_is_a_protocol_error() {
    let mut p = pair();
    p.send(frames::headers(1).grpc("/svc/M"));
    p.send(frames::raw(0x5, END_HEADERS, 1, b"\0\0\0\x02\x82"));
    p.expect_goaway(E::PROTOCOL_ERROR);
}

#[test]
fn header_block_must_not_be_interrupted() {
    let mut p = pair();
    p.send(frames::headers(1).grpc("/svc/M").open());
    p.send(frames::ping(*b"interupt"));
    p.expect_goaway(E::PROTOCOL_ERROR);

    let mut p = pair();
    p.send(frames::headers(1).grpc("/svc/M").open());
    p.send(frames::continuation(3, Bytes::new()));
    p.expect_goaway(E::PROTOCOL_ERROR);
}

#[test]
fn continuation_flood_is_enhance_your_calm() {
    let mut p = pair();
    p.send(frames::headers(1).grpc("/svc/M").open());
    for _ in 0..Config::default().max_continuation_frames + 1 {
        p.send(frames::continuation(1, Bytes::new()));
    }
    p.expect_goaway(E::ENHANCE_YOUR_CALM);

    // The same with bytes: the block grows past its limit.
    let config = Config {
        max_header_block_bytes: 40_000,
        ..Config::default()
    };
    let mut p = Pair::new(config);
    p.send(frames::headers(1).grpc("/svc/M").open());
    for _ in 0..3 {
        p.send(frames::continuation(1, vec![0x82u8; 16_000]));
    }
    p.expect_goaway(E::ENHANCE_YOUR_CALM);
}

#[test]
fn header_list_over_the_limit_is_answered_431() {
    let config = Config {
        max_header_list_size: 1024,
        ..Config::default()
    };
    let mut p = Pair::new(config);
    p.send(
        frames::headers(1)
            .grpc("/svc/M")
            .field("big", &"x".repeat(2000)),
    );
    let got = p.recv();
    assert_eq!(
        got,
        [
            Got::Headers {
                stream: 1,
                fields: vec![(":status".into(), "431".into())],
                end_stream: true
            },
            Got::Frame(Frame::RstStream(super::frame::RstStream::new(
                sid(1),
                E::NO_ERROR
            ))),
        ]
    );
    assert!(p.events().is_empty());
    // The HPACK context survived: the next request decodes.
    p.send(frames::headers(3).grpc("/svc/M").eos());
    expect_request(&mut p, 3);
}

#[test]
fn hpack_garbage_is_a_compression_error() {
    let mut p = pair();
    p.send(frames::headers(1).block(&b"\xff\xff\xff\xff\xff\xff"[..]));
    p.expect_goaway(E::COMPRESSION_ERROR);
}

#[test]
fn concurrent_stream_limit_refuses_streams() {
    let config = Config {
        max_concurrent_streams: 2,
        ..Config::default()
    };
    let mut p = Pair::new(config);
    p.send(frames::headers(1).grpc("/svc/M"));
    p.send(frames::headers(3).grpc("/svc/M").eos());
    assert_eq!(p.events().len(), 2);
    p.send(frames::headers(5).grpc("/svc/M"));
    p.expect_reset(5, E::REFUSED_STREAM);
    assert!(p.events().is_empty());
    // DATA the client had already sent on the refused stream is ignored.
    p.send(frames::data(5, &b"x"[..]).eos());
    assert!(p.recv().is_empty());
    // Finishing a stream frees a slot.
    let now = p.now;
    p.server
        .send_headers(sid(3), 200, [("grpc-status", "0")], true, now)
        .unwrap();
    p.recv();
    p.send(frames::headers(7).grpc("/svc/M"));
    expect_request(&mut p, 7);
}

#[test]
fn rapid_reset_is_enhance_your_calm() {
    let config = Config {
        max_resets: 50,
        ..Config::default()
    };
    let mut p = Pair::new(config);
    for i in 0..50 {
        let id = 2 * i + 1;
        p.send(frames::headers(id).grpc("/svc/M"));
        p.send(frames::reset(id, E::CANCEL));
    }
    assert!(!p.server.is_closed());
    assert_eq!(p.events().len(), 100);
    p.send(frames::headers(101).grpc("/svc/M"));
    p.send(frames::reset(101, E::CANCEL));
    p.expect_goaway(E::ENHANCE_YOUR_CALM);

    // Resets spread over time are fine.
    let mut p = Pair::new(config);
    for i in 0..200 {
        let id = 2 * i + 1;
        p.send(frames::headers(id).grpc("/svc/M"));
        p.send(frames::reset(id, E::CANCEL));
        if i % 40 == 39 {
            p.advance(Duration::from_secs(11));
        }
    }
    assert!(!p.server.is_closed());
}

#[test]
fn ping_is_answered_and_a_ping_flood_is_not() {
    let mut p = pair();
    p.send(frames::ping(*b"abcdefgh"));
    assert_eq!(
        p.recv(),
        [Got::Frame(Frame::Ping(frames::pong(*b"abcdefgh")))]
    );
    // A PING answer we did not ask for is ignored.
    p.send(frames::pong(*b"abcdefgh"));
    assert!(p.recv().is_empty());

    // A client that sends PINGs and never reads the answers.
    p.client_reads = false;
    for _ in 0..Config::default().max_pending_control + 1 {
        p.send(frames::ping(*b"flooding"));
    }
    p.client_reads = true;
    p.expect_goaway(E::ENHANCE_YOUR_CALM);
}

#[test]
fn settings_flood_is_enhance_your_calm() {
    let mut p = pair();
    p.client_reads = false;
    for _ in 0..Config::default().max_pending_control + 1 {
        p.send(frames::settings());
    }
    p.client_reads = true;
    p.expect_goaway(E::ENHANCE_YOUR_CALM);
}

#[test]
fn unknown_frames_and_priority_are_ignored() {
    let mut p = pair();
    p.send(frames::raw(0xbe, 0xff, 0, b"extension"));
    p.send(frames::raw(0xbe, 0, 1, b""));
    p.send(frames::priority(9, 1));
    assert!(p.recv().is_empty());
    // PRIORITY does not open the stream.
    assert_eq!(p.server.stream_state(sid(9)), State::Idle);
    p.send(frames::priority(9, 9));
    p.expect_reset(9, E::PROTOCOL_ERROR);
    p.send(frames::headers(11).grpc("/svc/M").priority(11));
    p.expect_reset(11, E::PROTOCOL_ERROR);
    p.send(frames::headers(13).grpc("/svc/M").eos());
    expect_request(&mut p, 13);
}

#[test]
fn malformed_requests_are_reset() {
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/"),
            ("Upper", "x"),
        ],
        vec![
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/"),
            ("connection", "x"),
        ],
        vec![
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/"),
            ("te", "gzip"),
        ],
        vec![(":method", "POST"), (":scheme", "http")],
        vec![(":method", "POST"), (":scheme", "http"), (":path", "")],
        vec![(":method", "POST"), (":path", "/")],
        vec![(":scheme", "http"), (":path", "/")],
        vec![
            (":method", "POST"),
            ("a", "b"),
            (":scheme", "http"),
            (":path", "/"),
        ],
        vec![
            (":method", "POST"),
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
        ],
        vec![
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/"),
            (":status", "200"),
        ],
        vec![
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/"),
            ("a", " padded"),
        ],
        vec![
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/"),
            ("a", "nul\0"),
        ],
        vec![(":method", "CONNECT"), (":scheme", "http"), (":path", "/")],
        vec![
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/"),
            ("content-length", "x"),
        ],
    ];
    let mut p = pair();
    for (i, fields) in cases.iter().enumerate() {
        let id = 2 * i as u32 + 1;
        let mut h = frames::headers(id).eos();
        for (n, v) in fields {
            h = h.field(n, v);
        }
        p.send(h);
        p.expect_reset(id, E::PROTOCOL_ERROR);
        assert!(p.events().is_empty(), "case {i}");
    }
    // Trailers with pseudo-headers or without END_STREAM.
    p.send(frames::headers(101).grpc("/svc/M"));
    p.send(frames::headers(101).field(":path", "/x").eos());
    p.expect_reset(101, E::PROTOCOL_ERROR);
    p.send(frames::headers(103).grpc("/svc/M"));
    p.send(frames::headers(103).field("x", "y"));
    p.expect_reset(103, E::PROTOCOL_ERROR);
    assert_eq!(p.events().len(), 4);
    // A CONNECT with only :authority is well formed.
    p.send(
        frames::headers(105)
            .field(":method", "CONNECT")
            .field(":authority", "h:1"),
    );
    expect_request(&mut p, 105);
}

#[test]
fn content_length_must_match_the_body() {
    let mut p = pair();
    p.send(
        frames::headers(1)
            .grpc("/svc/M")
            .field("content-length", "3"),
    );
    p.events();
    p.send(frames::data(1, &b"abcd"[..]));
    p.expect_reset(1, E::PROTOCOL_ERROR);
    assert_eq!(p.events().len(), 1);

    p.send(
        frames::headers(3)
            .grpc("/svc/M")
            .field("content-length", "3"),
    );
    p.send(frames::data(3, &b"ab"[..]).eos());
    p.expect_reset(3, E::PROTOCOL_ERROR);
    assert_eq!(p.events().len(), 2);

    p.send(
        frames::headers(5)
            .grpc("/svc/M")
            .field("content-length", "3")
            .eos(),
    );
    p.expect_reset(5, E::PROTOCOL_ERROR);
    assert!(p.events().is_empty());

    p.send(
        frames::headers(7)
            .grpc("/svc/M")
            .field("content-length", "3"),
    );
    p.send(frames::data(7, &b"abc"[..]).eos());
    assert_eq!(p.events().len(), 2);
    assert!(p.recv().is_empty());
}

#[test]
fn large_response_across_many_windows() {
    // The client keeps the default 64 KiB windows and 16 KiB frames.
    let mut p = pair();
    p.send(frames::headers(1).grpc("/svc/M").eos());
    expect_request(&mut p, 1);
    let body: Bytes = (0..1_000_000u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let now = p.now;
    p.server
        .send_headers(
            sid(1),
            200,
            [("content-type", "application/grpc")],
            false,
            now,
        )
        .unwrap();
    p.server
        .send_data(sid(1), body.clone(), false, now)
        .unwrap();
    p.server
        .send_trailers(sid(1), [("grpc-status", "0")], now)
        .unwrap();

    let mut received = Vec::new();
    let mut trailers = false;
    for _ in 0..100 {
        let got = p.recv();
        let mut n = 0u32;
        for g in &got {
            match g {
                Got::Data { data, .. } => {
                    assert!(data.len() <= 16_384, "frame larger than the client allows");
                    received.extend_from_slice(data);
                    n += data.len() as u32;
                }
                Got::Headers {
                    end_stream: true, ..
                } => trailers = true,
                _ => {}
            }
        }
        if trailers {
            break;
        }
        // The server stops at the window; the client opens it again.
        assert!(n as usize <= 65_535);
        assert!(n > 0, "server stalled with an open window");
        assert!(p.server.queued_send(sid(1)) > 0);
        p.send(frames::window_update(0, n));
        p.send(frames::window_update(1, n));
    }
    assert!(trailers);
    assert_eq!(received, body);
    assert_eq!(p.server.open_streams(), 0);
}

#[test]
fn windows_go_negative_after_a_settings_change() {
    let mut p = pair();
    p.send(frames::headers(1).grpc("/svc/M").eos());
    expect_request(&mut p, 1);
    let now = p.now;
    p.server
        .send_headers(sid(1), 200, [("a", "b")], false, now)
        .unwrap();
    p.server
        .send_data(sid(1), Bytes::from(vec![1u8; 100_000]), true, now)
        .unwrap();
    let sent: usize = data_frames(&p.recv()).iter().map(|d| d.1).sum();
    assert_eq!(sent, 65_535);
    // The client shrinks the initial window to 1,000: the stream's window
    // is now 1,000 - 65,535.
    p.send(Settings {
        initial_window_size: Some(1_000),
        ..frames::settings()
    });
    p.recv();
    p.send(frames::window_update(0, 100_000));
    p.send(frames::window_update(1, 64_535));
    assert!(data_frames(&p.recv()).is_empty(), "window still at zero");
    p.send(frames::window_update(1, 10));
    assert_eq!(data_frames(&p.recv()), [(1, 10, false)]);
    // Raising the initial window lifts every stream's window by the change.
    p.send(Settings {
        initial_window_size: Some(1_000 + 40_000),
        ..frames::settings()
    });
    let sent = data_frames(&p.recv());
    assert_eq!(sent.iter().map(|d| d.1).sum::<usize>(), 34_455);
    assert_eq!(sent.last().map(|d| d.2), Some(true));
}

#[test]
fn request_body_windows_follow_the_application() {
    let config = Config {
        stream_window: 100_000,
        connection_window: 1_000_000,
        ..Config::default()
    };
    let mut p = Pair::new(config);
    p.send(frames::headers(1).grpc("/svc/M"));
    expect_request(&mut p, 1);
    // Fill the stream window; no WINDOW_UPDATE comes back until the
    // application releases what it consumed.
    for _ in 0..10 {
        p.send(frames::data(1, vec![7u8; 10_000]));
    }
    assert!(p.recv().is_empty());
    let events = p.events();
    assert_eq!(events.len(), 10);
    p.send(frames::data(1, &b"x"[..]));
    p.expect_reset(1, E::FLOW_CONTROL_ERROR);

    let mut p = Pair::new(config);
    p.send(frames::headers(1).grpc("/svc/M"));
    expect_request(&mut p, 1);
    let mut total = 0usize;
    let mut window = 100_000usize;
    let mut updates = 0;
    while total < 5_000_000 {
        let n = window.min(16_384);
        assert!(n > 0, "client blocked with {total} sent");
        p.send(frames::data(1, vec![1u8; n]));
        total += n;
        window -= n;
        for e in p.events() {
            let Event::Data { data, .. } = e else {
                panic!("{e:?}");
            };
            let now = p.now;
            p.server.release_capacity(sid(1), data.len(), now);
        }
        for g in p.recv() {
            if let Got::Frame(Frame::WindowUpdate(w)) = g
                && w.stream == sid(1)
            {
                window += w.increment as usize;
                updates += 1;
            }
        }
    }
    // One update per half window released: 5 MB / 64 KiB.
    assert!(updates >= 70, "{updates} stream updates");
}

#[test]
fn padding_is_given_back_at_once() {
    let config = Config {
        stream_window: 65_535,
        connection_window: 65_535,
        ..Config::default()
    };
    let mut p = Pair::new(config);
    p.send(frames::headers(1).grpc("/svc/M"));
    p.events();
    // 200 frames of 1 byte + 255 bytes of padding: far more than the
    // windows, all padding, given back as it arrives.
    for _ in 0..200 {
        p.send(frames::data(1, &b"x"[..]).padded(255));
    }
    assert!(!p.server.is_closed());
    assert_eq!(p.events().len(), 200);
    let updates = p
        .recv()
        .into_iter()
        .filter(|g| matches!(g, Got::Frame(Frame::WindowUpdate(_))))
        .count();
    assert!(updates > 0);
}

#[test]
fn graceful_shutdown() {
    let mut p = pair();
    p.send(frames::headers(1).grpc("/svc/M").eos());
    expect_request(&mut p, 1);
    let now = p.now;
    p.server.shutdown(now);
    let got = p.recv();
    assert_eq!(got[0].goaway(), Some((MAX_WINDOW_SIZE, E::NO_ERROR)));
    let Got::Frame(Frame::Ping(ping)) = &got[1] else {
        panic!("{got:?}")
    };
    // A stream opened before the client saw the first GOAWAY is still taken.
    p.send(frames::headers(3).grpc("/svc/M").eos());
    expect_request(&mut p, 3);
    p.send(frames::pong(ping.payload));
    assert_eq!(p.recv()[0].goaway(), Some((3, E::NO_ERROR)));
    // Streams above the last one are ignored now.
    p.send(frames::headers(5).grpc("/svc/M").eos());
    assert!(p.events().is_empty());
    assert!(p.recv().is_empty());
    // The open streams finish, then the connection closes.
    for id in [1, 3] {
        assert!(!p.server.is_closed());
        let now = p.now;
        p.server
            .send_headers(sid(id), 200, [("grpc-status", "0")], true, now)
            .unwrap();
        p.drive();
    }
    assert!(p.server.is_closed());
    assert!(!p.server.wants_linger());
}

#[test]
fn shutdown_without_an_answer_to_the_ping() {
    let mut p = pair();
    let now = p.now;
    p.server.shutdown(now);
    p.recv();
    p.advance(Config::default().shutdown_grace);
    assert_eq!(p.recv()[0].goaway(), Some((0, E::NO_ERROR)));
    assert!(p.server.is_closed());
}

#[test]
fn idle_connection_is_closed() {
    let mut p = pair();
    let idle = Config::default().idle_timeout;
    p.send(frames::headers(1).grpc("/svc/M").eos());
    p.events();
    p.advance(idle * 2);
    assert!(!p.server.is_closed(), "a stream is open");
    let now = p.now;
    p.server
        .send_headers(sid(1), 200, [("grpc-status", "0")], true, now)
        .unwrap();
    p.recv();
    assert_eq!(p.server.poll_timeout(), Some(p.now + idle));
    p.advance(idle - Duration::from_secs(1));
    assert!(!p.server.is_closed());
    p.advance(Duration::from_secs(1));
    p.expect_goaway(E::NO_ERROR);
}

#[test]
fn settings_must_be_acknowledged() {
    let mut p = Pair::raw(Config::default());
    p.send_bytes(PREFACE);
    p.send(frames::settings());
    p.recv();
    p.advance(Config::default().settings_timeout);
    p.expect_goaway(E::SETTINGS_TIMEOUT);
}

#[test]
fn zero_window_stalls_end_the_stream_then_the_connection() {
    let stall = Config::default().stall_timeout;
    // A stream window that never opens.
    let mut p = Pair::with_settings(
        Config::default(),
        Settings {
            initial_window_size: Some(0),
            ..frames::settings()
        },
    );
    p.send(frames::headers(1).grpc("/svc/M").eos());
    expect_request(&mut p, 1);
    let now = p.now;
    p.server
        .send_headers(sid(1), 200, [("a", "b")], false, now)
        .unwrap();
    p.server
        .send_data(sid(1), Bytes::from_static(b"stuck"), true, now)
        .unwrap();
    p.recv();
    assert_eq!(p.server.poll_timeout(), Some(now + stall));
    p.advance(stall);
    p.expect_reset(1, E::CANCEL);
    assert_eq!(
        p.events(),
        [Event::Reset {
            stream: sid(1),
            code: E::CANCEL
        }]
    );

    // A connection window that never opens.
    let mut p = pair();
    p.send(frames::headers(1).grpc("/svc/M").eos());
    p.send(frames::window_update(1, 100_000));
    expect_request(&mut p, 1);
    let now = p.now;
    p.server
        .send_headers(sid(1), 200, [("a", "b")], false, now)
        .unwrap();
    p.server
        .send_data(sid(1), Bytes::from(vec![0u8; 70_000]), true, now)
        .unwrap();
    p.recv();
    p.advance(stall);
    p.expect_goaway(E::ENHANCE_YOUR_CALM);
}

#[test]
fn a_client_that_does_not_read_is_dropped() {
    let mut p = pair();
    p.send(frames::headers(1).grpc("/svc/M").eos());
    expect_request(&mut p, 1);
    p.client_reads = false;
    let now = p.now;
    p.server
        .send_headers(sid(1), 200, [("a", "b")], true, now)
        .unwrap();
    assert!(p.server.wants_write());
    p.advance(Config::default().stall_timeout);
    assert!(p.server.is_closed());
    assert!(!p.server.wants_write());
}

#[test]
fn application_reset_and_early_response() {
    let mut p = pair();
    p.send(frames::headers(1).grpc("/svc/M"));
    expect_request(&mut p, 1);
    let now = p.now;
    p.server.reset(sid(1), E::INTERNAL_ERROR, now).unwrap();
    p.expect_reset(1, E::INTERNAL_ERROR);
    assert!(p.events().is_empty());
    assert_eq!(
        p.server.reset(sid(1), E::CANCEL, now),
        Err(SendError::UnknownStream)
    );
    p.send(frames::data(1, &b"in flight"[..]));
    assert!(p.recv().is_empty());

    // A complete response while the request body is still coming: the
    // client is asked to stop with RST_STREAM(NO_ERROR).
    p.send(frames::headers(3).grpc("/svc/M"));
    expect_request(&mut p, 3);
    let now = p.now;
    p.server
        .send_headers(sid(3), 200, [("grpc-status", "3")], true, now)
        .unwrap();
    let got = p.recv();
    assert_eq!(got[1].reset(), Some((3, E::NO_ERROR)));
    p.send(frames::data(3, &b"rest"[..]).eos());
    assert!(p.recv().is_empty());
    assert!(p.events().is_empty());
}

#[test]
fn output_backlog_stops_reading() {
    let config = Config {
        output_high_water: 10_000,
        max_pending_control: 10_000,
        ..Config::default()
    };
    let mut p = Pair::new(config);
    p.client_reads = false;
    assert!(p.server.wants_read());
    for i in 0..700 {
        p.send(frames::ping([(i % 256) as u8; 8]));
    }
    assert!(!p.server.wants_read());
    p.client_reads = true;
    p.drive();
    assert!(p.server.wants_read());
}

#[test]
fn peer_frame_size_and_header_table_size_are_honoured() {
    let mut p = Pair::with_settings(
        Config::default(),
        Settings {
            header_table_size: Some(0),
            initial_window_size: Some(1 << 20),
            ..frames::settings()
        },
    );
    p.send(frames::window_update(0, 1 << 20));
    p.send(frames::headers(1).grpc("/svc/M").eos());
    expect_request(&mut p, 1);
    let now = p.now;
    // A header block larger than a frame goes out as HEADERS +
    // CONTINUATION; the client's decoder (checked in Pair) agrees on the
    // table size update.
    let big = "y".repeat(40_000);
    p.server
        .send_headers(sid(1), 200, [("x-big", big.as_str())], false, now)
        .unwrap();
    p.server
        .send_data(sid(1), Bytes::from(vec![0u8; 100_000]), true, now)
        .unwrap();
    let got = p.recv();
    let Got::Headers { fields, .. } = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!(fields[1].1.len(), 40_000);
    let data = data_frames(&got);
    assert_eq!(data.len(), 7);
    assert!(data.iter().all(|d| d.1 <= 16_384));
}

#[test]
fn end_of_stream_from_the_client_cancels_open_streams() {
    let mut p = pair();
    p.send(frames::headers(1).grpc("/svc/M"));
    expect_request(&mut p, 1);
    let now = p.now;
    p.server.handle_eof(now);
    assert_eq!(
        p.events(),
        [Event::Reset {
            stream: sid(1),
            code: E::CANCEL
        }]
    );
    assert!(p.server.is_closed());
}

#[test]
fn client_goaway_drains_then_closes() {
    let mut p = pair();
    p.send(frames::headers(1).grpc("/svc/M").eos());
    expect_request(&mut p, 1);
    p.send(frames::goaway(0, E::NO_ERROR));
    assert!(!p.server.is_closed());
    let now = p.now;
    p.server
        .send_headers(sid(1), 200, [("grpc-status", "0")], true, now)
        .unwrap();
    p.drive();
    assert!(p.server.is_closed());
}

#[test]
fn many_streams_interleave_fairly() {
    let mut p = Pair::with_settings(
        Config::default(),
        Settings {
            initial_window_size: Some(1 << 20),
            ..frames::settings()
        },
    );
    p.send(frames::window_update(0, 10 << 20));
    let now = p.now;
    for id in [1, 3, 5] {
        p.send(frames::headers(id).grpc("/svc/M").eos());
    }
    p.events();
    // While the client does not read, the first stream fills the output
    // batch; once it reads, the streams take turns frame by frame.
    p.client_reads = false;
    for id in [1, 3, 5] {
        p.server
            .send_headers(sid(id), 200, [("a", "b")], false, now)
            .unwrap();
        p.server
            .send_data(sid(id), Bytes::from(vec![0u8; 400_000]), true, now)
            .unwrap();
    }
    p.client_reads = true;
    let order: Vec<u32> = data_frames(&p.recv()).iter().map(|d| d.0).collect();
    let first_batch = order.iter().take_while(|&&id| id == 1).count();
    assert!(
        first_batch <= 17,
        "{first_batch} frames before the first turn"
    );
    assert_eq!(&order[first_batch..first_batch + 6], &[3, 5, 1, 3, 5, 1]);
    assert_eq!(order.len(), 3 * 400_000usize.div_ceil(16_384));
}

#[test]
fn garbage_after_the_handshake_never_panics() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..300 {
        let mut p = pair();
        p.send(frames::headers(1).grpc("/svc/M"));
        let mut bytes = Vec::new();
        for _ in 0..(round % 50 + 1) * 16 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            bytes.push((seed >> 24) as u8);
            // Mostly small frame lengths, so frames get parsed.
            if bytes.len() % 16 == 1 {
                bytes.extend_from_slice(&[0, 0]);
            }
        }
        p.send_bytes(&bytes);
        p.advance(Duration::from_secs(1000));
        p.recv();
        p.events();
    }
}
