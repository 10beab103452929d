//! Response streams: a request yields zero or more responses and then
//! exactly one final mark (Triton's `TRITONSERVER_RESPONSE_COMPLETE_FINAL`).
//! The final mark rides on the last response or comes alone.
//!
//! A [`ResponseSender`] is the one object every layer answers a request
//! through: a backend (many times if the model is decoupled), the scheduler
//! (once, for every other model), an ensemble, the server's shared-memory
//! and classification steps. It can be cloned and called from any thread;
//! deliveries are serialized, so the sink sees them in the order they were
//! sent and never two at once. After the final mark it refuses further use
//! with an error instead of panicking. When the last clone is dropped
//! without a final mark (a backend that forgot, or a panic that unwound
//! past it), the sink still gets one: an internal error, final, so no client
//! waits forever.
//!
//! The one-response case is the same path: one delivery carrying the
//! response and the final mark.

use std::sync::{Arc, Mutex, PoisonError};

use super::error::{Error, Result};
use super::request::{CancelFlag, InferResponse};

/// One delivery to a sink: a response, an error for the request, or
/// nothing (the final mark alone), and whether it is the last.
pub type Delivery = Option<Result<InferResponse>>;

/// What a front end gives to receive a request's responses: called once per
/// delivery, never concurrently, the last call with `is_final` set.
///
/// A sink must not send on the sender it belongs to (it would wait on
/// itself).
pub trait ResponseSink: Send {
    /// Receives one delivery.
    fn deliver(&mut self, delivery: Delivery, is_final: bool);
}

impl<F: FnMut(Delivery, bool) + Send> ResponseSink for F {
    fn deliver(&mut self, delivery: Delivery, is_final: bool) {
        self(delivery, is_final)
    }
}

/// The handle a request is answered through; see the module doc.
#[derive(Clone)]
pub struct ResponseSender {
    inner: Arc<Inner>,
}

struct Inner {
    cancel: CancelFlag,
    state: Mutex<State>,
}

struct State {
    /// `None` once the final mark has been delivered.
    sink: Option<Box<dyn ResponseSink>>,
    /// Responses (and errors) delivered so far.
    sent: u32,
}

impl ResponseSender {
    /// A sender delivering to `sink`; `cancel` is the request's flag.
    pub fn new(cancel: CancelFlag, sink: impl ResponseSink + 'static) -> ResponseSender {
        ResponseSender {
            inner: Arc::new(Inner {
                cancel,
                state: Mutex::new(State {
                    sink: Some(Box::new(sink)),
                    sent: 0,
                }),
            }),
        }
    }

    /// A sender for a caller that wants exactly one outcome: `complete`
    /// gets the first response or error. A stream that ends with no
    /// response at all completes with an error; responses after the first
    /// are dropped (the front ends that allow only one response check the
    /// model's policy before they submit).
    pub fn unary(
        cancel: CancelFlag,
        complete: impl FnOnce(Result<InferResponse>) + Send + 'static,
    ) -> ResponseSender {
        let mut complete = Some(complete);
        ResponseSender::new(cancel, move |delivery: Delivery, _is_final: bool| {
            let outcome = match delivery {
                Some(outcome) => outcome,
                None => Err(Error::internal("the model finished without a response")),
            };
            if let Some(complete) = complete.take() {
                complete(outcome);
            }
        })
    }

    /// Sends `response`; `is_final` makes it the last.
    pub fn send(&self, response: InferResponse, is_final: bool) -> Result<()> {
        self.deliver(Some(Ok(response)), is_final)
    }

    /// Sends an error for the request; `is_final` makes it the last.
    pub fn send_error(&self, error: Error, is_final: bool) -> Result<()> {
        self.deliver(Some(Err(error)), is_final)
    }

    /// Sends an outcome; `is_final` makes it the last.
    pub fn send_result(&self, outcome: Result<InferResponse>, is_final: bool) -> Result<()> {
        self.deliver(Some(outcome), is_final)
    }

    /// Sends the final mark alone.
    pub fn finish(&self) -> Result<()> {
        self.deliver(None, true)
    }

    /// Delivers `delivery` to the sink, or refuses when the final mark has
    /// already gone.
    pub fn deliver(&self, delivery: Delivery, is_final: bool) -> Result<()> {
        let mut guard = self
            .inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let state = &mut *guard;
        let Some(sink) = state.sink.as_mut() else {
            return Err(Error::internal(
                "the request's final response has already been sent; no more responses can be sent for it",
            ));
        };
        if delivery.is_some() {
            state.sent += 1;
        }
        sink.deliver(delivery, is_final);
        if is_final {
            state.sink = None;
        }
        Ok(())
    }

    /// Whether the client cancelled the request (or went away).
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// The request's cancellation flag.
    pub fn cancel_flag(&self) -> &CancelFlag {
        &self.inner.cancel
    }

    /// Whether the final mark has been sent.
    pub fn is_finished(&self) -> bool {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sink
            .is_none()
    }

    /// Responses and errors delivered so far (the final mark alone does not
    /// count).
    pub fn sent(&self) -> u32 {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sent
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(mut sink) = state.sink.take() {
            sink.deliver(
                Some(Err(Error::internal(
                    "the request was released without a final response",
                ))),
                true,
            );
        }
    }
}

impl std::fmt::Debug for ResponseSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseSender")
            .field("cancelled", &self.is_cancelled())
            .field("finished", &self.is_finished())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    type Seen = (Option<std::result::Result<String, String>>, bool);

    fn recorder() -> (ResponseSender, CancelFlag, mpsc::Receiver<Seen>) {
        let (tx, rx) = mpsc::channel();
        let cancel = CancelFlag::default();
        let sender = ResponseSender::new(cancel.clone(), move |d: Delivery, f: bool| {
            let d = d.map(|r| {
                r.map(|r| r.id.unwrap_or_default())
                    .map_err(|e| e.to_string())
            });
            let _ = tx.send((d, f));
        });
        (sender, cancel, rx)
    }

    fn response(id: &str) -> InferResponse {
        InferResponse {
            id: Some(id.to_owned()),
            ..Default::default()
        }
    }

    #[test]
    fn many_responses_then_a_final_mark_alone() {
        let (sender, _, rx) = recorder();
        sender.send(response("a"), false).unwrap();
        sender.send(response("b"), false).unwrap();
        sender.finish().unwrap();
        let seen: Vec<Seen> = rx.try_iter().collect();
        assert_eq!(
            seen,
            vec![
                (Some(Ok("a".into())), false),
                (Some(Ok("b".into())), false),
                (None, true)
            ]
        );
        assert!(sender.is_finished());
        assert_eq!(sender.sent(), 2);
    }

    #[test]
    fn use_after_the_final_mark_is_an_error() {
        let (sender, _, rx) = recorder();
        sender.send(response("only"), true).unwrap();
        let err = sender.send(response("late"), false).unwrap_err();
        assert!(err.to_string().contains("already been sent"), "{err}");
        assert!(sender.finish().is_err());
        assert_eq!(rx.try_iter().count(), 1);
    }

    #[test]
    fn responses_from_many_threads_are_all_delivered_once() {
        let (sender, _, rx) = recorder();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let sender = sender.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        sender.send(response(&format!("{t}-{i}")), false).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        sender.finish().unwrap();
        let seen: Vec<Seen> = rx.try_iter().collect();
        assert_eq!(seen.len(), 8001);
        assert_eq!(seen.last(), Some(&(None, true)));
        let mut ids: Vec<String> = seen[..8000]
            .iter()
            .map(|(d, f)| {
                assert!(!f);
                d.clone().unwrap().unwrap()
            })
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 8000);
        // Per thread, order is kept.
        for t in 0..8 {
            let mine: Vec<usize> = seen[..8000]
                .iter()
                .filter_map(|(d, _)| {
                    let id = d.clone().unwrap().unwrap();
                    let (tt, i) = id.split_once('-').unwrap();
                    (tt == t.to_string()).then(|| i.parse().unwrap())
                })
                .collect();
            assert_eq!(mine, (0..1000).collect::<Vec<_>>());
        }
    }

    #[test]
    fn cancellation_is_visible_to_the_sender() {
        let (sender, cancel, _rx) = recorder();
        assert!(!sender.is_cancelled());
        cancel.cancel();
        assert!(sender.is_cancelled());
    }

    #[test]
    fn dropping_every_clone_without_a_final_mark_sends_an_error_final() {
        let (sender, _, rx) = recorder();
        sender.send(response("a"), false).unwrap();
        let clone = sender.clone();
        drop(sender);
        assert_eq!(rx.try_iter().count(), 1);
        drop(clone);
        let seen: Vec<Seen> = rx.try_iter().collect();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].1);
        assert!(
            seen[0]
                .0
                .clone()
                .unwrap()
                .unwrap_err()
                .contains("without a final response")
        );
    }

    #[test]
    fn unary_takes_the_first_outcome_and_reports_an_empty_stream() {
        let (tx, rx) = mpsc::channel();
        let sender = ResponseSender::unary(CancelFlag::default(), move |r| {
            tx.send(r.map(|r| r.id).map_err(|e| e.to_string())).unwrap()
        });
        sender.send(response("one"), true).unwrap();
        assert_eq!(rx.try_recv().unwrap(), Ok(Some("one".into())));

        let (tx, rx) = mpsc::channel();
        let sender = ResponseSender::unary(CancelFlag::default(), move |r| {
            tx.send(r.map(|r| r.id).map_err(|e| e.to_string())).unwrap()
        });
        sender.finish().unwrap();
        assert!(
            rx.try_recv()
                .unwrap()
                .unwrap_err()
                .contains("without a response")
        );
    }
}
