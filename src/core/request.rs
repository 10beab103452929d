//! The one request and response type both front ends decode into and encode
//! from. Nothing below `protocol/` knows which wire a request came from.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::memory::Bindings;
use super::tensor::Tensor;

/// A request or response parameter value (KServe v2 `parameters`).
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Double(f64),
    /// A string.
    String(String),
}

/// Ordered parameters; the order in which they arrived is kept for echoing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parameters(pub Vec<(String, ParamValue)>);

impl Parameters {
    /// Looks a parameter up by name.
    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// Sets a parameter, replacing an earlier value of the same name.
    pub fn set(&mut self, name: impl Into<String>, value: ParamValue) {
        let name = name.into();
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A tensor the client placed in, or wants written into, a registered
/// shared-memory region (the `shared_memory_*` parameters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShmRef {
    /// Registered region name.
    pub region: String,
    /// Offset of the tensor in the region.
    pub offset: u64,
    /// Bytes of the tensor (inputs) or room for it (outputs).
    pub byte_size: u64,
}

/// An output the client asked for, with how it wants it delivered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestedOutput {
    /// Output name.
    pub name: String,
    /// Classification extension: return the top `class_count` entries
    /// instead of the tensor (0 = the tensor itself).
    pub class_count: u32,
    /// Binary tensor data extension: return this output as binary data
    /// (`None` = the front end's default).
    pub binary_data: Option<bool>,
    /// Any other per-output parameters, kept for the front end.
    pub parameters: Parameters,
    /// Shared-memory extension: write the output there instead of
    /// returning its data.
    pub shm: Option<ShmRef>,
}

/// A shared flag a front end sets when the client goes away; backends and
/// queues check it to drop work nobody waits for.
///
/// A queue holding the request may register a hook with
/// [`CancelFlag::on_cancel`]; [`CancelFlag::cancel`] runs it once, on the
/// cancelling thread, so the queue can let go of the request at once instead
/// of when it reaches the head. The hook only wakes its owner: it runs on a
/// front end's thread, which may hold locks of its own.
#[derive(Clone, Default)]
pub struct CancelFlag(Arc<CancelState>);

type CancelHook = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct CancelState {
    cancelled: AtomicBool,
    hook: Mutex<Option<CancelHook>>,
}

impl CancelFlag {
    /// Marks the request as cancelled and runs the registered hook, if any.
    pub fn cancel(&self) {
        if self.0.cancelled.swap(true, Ordering::AcqRel) {
            return;
        }
        let hook = self
            .0
            .hook
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(hook) = hook {
            hook();
        }
    }

    /// Whether the request was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::Acquire)
    }

    /// Registers `hook` to run when the request is cancelled, replacing an
    /// earlier one; runs it right away if the request already is.
    pub fn on_cancel(&self, hook: impl FnOnce() + Send + 'static) {
        let mut slot = self.0.hook.lock().unwrap_or_else(PoisonError::into_inner);
        if self.is_cancelled() {
            drop(slot);
            hook();
        } else {
            *slot = Some(Box::new(hook));
        }
    }

    /// Drops the registered hook (the request left the queue that set it).
    pub fn clear_hook(&self) {
        self.0
            .hook
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

impl std::fmt::Debug for CancelFlag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CancelFlag")
            .field(&self.is_cancelled())
            .finish()
    }
}

/// One inference request, decoded from either front end.
#[derive(Debug, Clone, Default)]
pub struct InferRequest {
    /// Target model.
    pub model_name: String,
    /// Requested version; `None` picks by the model's version policy (latest).
    pub model_version: Option<i64>,
    /// Request id, echoed in the response.
    pub id: Option<String>,
    /// Input tensors, shape as sent (batch dimension included when the model
    /// batches).
    pub inputs: Vec<Tensor>,
    /// Requested outputs; empty means every output, with defaults.
    pub outputs: Vec<RequestedOutput>,
    /// Request parameters.
    pub parameters: Parameters,
    /// Set when the client goes away.
    pub cancel: CancelFlag,
    /// Inputs the client placed in shared memory, by name: their tensors
    /// have empty data until the server resolves them.
    pub shm_inputs: Vec<(String, ShmRef)>,
    /// Inputs on a GPU and outputs bound to client shared memory.
    pub bindings: Bindings,
}

/// One inference response.
#[derive(Debug, Clone, Default)]
pub struct InferResponse {
    /// Model that answered.
    pub model_name: String,
    /// Version that answered.
    pub model_version: i64,
    /// Echo of the request id.
    pub id: Option<String>,
    /// Output tensors, in the order the client asked for them (or the
    /// model's order when it asked for none).
    pub outputs: Vec<Tensor>,
    /// Response parameters.
    pub parameters: Parameters,
}
