//! The contract between the event loops and the application: an
//! [`HttpService`] receives each complete request with a [`Responder`], and
//! completes the responder exactly once, from any thread.
//!
//! A request whose body is expensive to take apart (compressed, or large
//! enough that parsing it would hold the event loop up; the service says
//! which in [`HttpService::offload`]) is decompressed and handed to the
//! service on a decoding thread instead of the loop, so that the other
//! connections of that loop are not kept waiting.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};

use super::event_loop::ConnRef;
use crate::core::CancelFlag;
use crate::protocol::http1::{self, Coding, Oversized, Request, Response};

/// Bodies larger than this are handed to [`HttpService::handle`] off the
/// event loop unless the service says otherwise.
pub const OFFLOAD_ABOVE_BYTES: usize = 256 * 1024;

/// The application behind the HTTP front end (the KServe router).
///
/// `handle` runs on an event-loop thread, or on a decoding thread for the
/// requests [`HttpService::offload`] picks: it must not block. Work that
/// takes time (inference) is handed to other threads together with the
/// [`Responder`], which is completed there.
pub trait HttpService: Send + Sync + 'static {
    /// Handles one request; answer through `responder`, now or later.
    fn handle(&self, request: Request, responder: Responder);

    /// Whether `handle` should run off the event loop for this request
    /// because taking its body apart takes long (it runs on the loop, so
    /// it must be quick). Compressed bodies are always decoded off the
    /// loop whatever this says. By default: bodies over
    /// [`OFFLOAD_ABOVE_BYTES`].
    fn offload(&self, request: &Request) -> bool {
        request.body.len() > OFFLOAD_ABOVE_BYTES
    }

    /// The answer to a request whose body is over the size limit
    /// ([`Request::oversized`]); `handle` is not called for it. By default
    /// 413 with a JSON error naming the sizes.
    fn body_too_large(&self, request: &Request, oversized: &Oversized) -> Response {
        let _ = request;
        let what = if oversized.decompressed {
            "decompressed request body"
        } else {
            "request body"
        };
        Response::error(
            413,
            &format!(
                "{what} of {} bytes exceeds the limit of {} bytes",
                oversized.size, oversized.limit
            ),
        )
    }
}

/// Posted to a connection's loop when its outbox goes from empty to not
/// empty.
pub(crate) struct OutboxFilled;

/// Responses of one connection waiting to be applied, each with the `seq`
/// of the request it answers, in the order given. The session applies them
/// at the end of every dispatch, so an answer computed on the loop thread
/// goes out in the same write; answers given outside a dispatch (from
/// other threads) also post one [`OutboxFilled`] per batch to get the loop
/// there.
#[derive(Default)]
pub(crate) struct Outbox {
    responses: Mutex<Vec<(u64, Response)>>,
    /// The session is handing requests to the service and flushes the
    /// outbox right after: a responder need not tell the loop.
    dispatching: AtomicBool,
}

impl Outbox {
    /// Queues a response; true when the loop must be told (the outbox was
    /// empty and no dispatch will flush it).
    fn push(&self, seq: u64, response: Response) -> bool {
        let mut responses = self
            .responses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        responses.push((seq, response));
        // Read under the lock: a session that stopped dispatching cleared
        // the flag before taking the lock to flush, so a push that still
        // sees the flag set is taken by that flush.
        responses.len() == 1 && !self.dispatching.load(Ordering::Acquire)
    }

    /// Marks the start (`true`) or the end of a dispatch; the session
    /// flushes after the end.
    pub(crate) fn set_dispatching(&self, dispatching: bool) {
        self.dispatching.store(dispatching, Ordering::Release);
    }

    /// Moves every queued response into `into` (empty), oldest first.
    pub(crate) fn take(&self, into: &mut Vec<(u64, Response)>) {
        let mut responses = self
            .responses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *responses, into);
    }
}

/// Where a responder delivers.
enum Sink {
    /// Into the outbox of the connection that asked.
    Loop {
        outbox: Arc<Outbox>,
        conn: ConnRef<OutboxFilled>,
    },
    /// Into a channel (tests and in-process callers).
    Channel(mpsc::Sender<Response>),
}

/// Completes one request, once, from any thread.
///
/// Dropping a responder without calling [`Responder::respond`] answers
/// `500` so the client never hangs. When the client goes away first, the
/// [`Responder::cancel_flag`] is set; a response sent after that is
/// dropped.
pub struct Responder {
    sink: Option<Sink>,
    seq: u64,
    coding: Option<Coding>,
    cancel: CancelFlag,
}

impl Responder {
    pub(crate) fn for_loop(
        outbox: Arc<Outbox>,
        conn: ConnRef<OutboxFilled>,
        request: &Request,
    ) -> Responder {
        Responder {
            sink: Some(Sink::Loop { outbox, conn }),
            seq: request.seq,
            coding: request.response_coding(),
            cancel: request.cancel.clone(),
        }
    }

    /// A responder that delivers into a channel instead of a connection:
    /// for tests of an [`HttpService`] and for in-process callers.
    pub fn channel(request: &Request) -> (Responder, mpsc::Receiver<Response>) {
        let (tx, rx) = mpsc::channel();
        let responder = Responder {
            sink: Some(Sink::Channel(tx)),
            seq: request.seq,
            coding: request.response_coding(),
            cancel: request.cancel.clone(),
        };
        (responder, rx)
    }

    /// The request's cancellation flag, set when the client disconnects.
    pub fn cancel_flag(&self) -> &CancelFlag {
        &self.cancel
    }

    /// Whether the client has gone away.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Sends the response as it is.
    pub fn respond(mut self, response: Response) {
        self.deliver(response);
    }

    /// Sends the response compressed with the coding the client's
    /// `Accept-Encoding` asked for, if any (Triton compresses inference
    /// responses, and only those). It is compressed here, on the calling
    /// thread, so the event loop does not spend its time in the
    /// compressor.
    pub fn respond_compressed(mut self, mut response: Response) {
        if let Some(coding) = self.coding {
            http1::compress_response(&mut response, coding);
        }
        self.deliver(response);
    }

    fn deliver(&mut self, response: Response) {
        let Some(sink) = self.sink.take() else { return };
        match sink {
            Sink::Loop { outbox, conn } => {
                if outbox.push(self.seq, response) {
                    conn.post(OutboxFilled);
                }
            }
            Sink::Channel(tx) => {
                // The receiver may be gone; nobody is waiting then.
                let _ = tx.send(response);
            }
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if self.sink.is_some() {
            self.deliver(Response::error(
                500,
                "request was dropped without a response",
            ));
        }
    }
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("seq", &self.seq)
            .field("pending", &self.sink.is_some())
            .field("cancelled", &self.cancel.is_cancelled())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::http1::Connection;
    use std::time::Instant;

    fn request(extra: &str) -> Request {
        let mut c = Connection::new(http1::Config::default(), Instant::now());
        c.handle_read(
            format!("GET / HTTP/1.1\r\n{extra}\r\n").as_bytes(),
            Instant::now(),
        );
        c.poll_request().expect("a request")
    }

    #[test]
    fn dropped_responder_answers_500() {
        let req = request("");
        let (responder, rx) = Responder::channel(&req);
        drop(responder);
        assert_eq!(rx.recv().unwrap().status, 500);
    }

    #[test]
    fn responds_once_compressed_only_when_asked_to() {
        let req = request("Accept-Encoding: gzip\r\n");
        let (responder, rx) = Responder::channel(&req);
        assert!(!responder.is_cancelled());
        responder.respond_compressed(Response::json(200, "{\"a\":1}"));
        let resp = rx.recv().unwrap();
        assert_eq!(resp.header("content-encoding"), Some("gzip"));
        assert!(rx.try_recv().is_err(), "exactly one response");

        let (responder, rx) = Responder::channel(&req);
        responder.respond(Response::json(200, "{\"a\":1}"));
        assert_eq!(rx.recv().unwrap().header("content-encoding"), None);

        let plain = request("");
        let (responder, rx) = Responder::channel(&plain);
        responder.respond_compressed(Response::json(200, "{\"a\":1}"));
        assert_eq!(rx.recv().unwrap().header("content-encoding"), None);
    }
}
