//! Layotto's proxy-wasm ABI, host side: the imports a guest calls and the
//! order in which its exports are driven.
//!
//! A guest exports `proxy_abi_version_0_1_0` or `proxy_abi_version_0_2_0`
//! (Layotto's host registers the first, its docs and Rust demo use the
//! second), `proxy_get_id` (Layotto's own: the guest writes its function
//! id to the call-data buffer), an allocator (`proxy_on_memory_allocate`
//! or `malloc`) through which host answers reach it, and the
//! `proxy_on_*` callbacks. Each export is called with the argument list
//! its own signature declares (0.1.0 and 0.2.0 guests differ), missing
//! trailing arguments as 0.
//!
//! At start: `_start` (or `_initialize`), `proxy_get_id`,
//! `proxy_on_context_create(root, 0)`, `proxy_on_vm_start(root, len)`,
//! `proxy_on_configure(root, len)`. Per request, as Layotto's filter:
//! `proxy_on_context_create(ctx, root)`, `proxy_on_request_headers(ctx,
//! n, end_of_stream)`, `proxy_on_request_body(ctx, len, 1)` when there is
//! a body, then `proxy_on_done(ctx)` and `proxy_on_delete(ctx)`; the
//! answer is what the guest wrote to the response body buffer.
//!
//! Imports served: `proxy_log`, the buffer calls
//! (`proxy_get_buffer_bytes`, `proxy_set_buffer_bytes`,
//! `proxy_get_buffer_status`), the header map calls, the time, Layotto's
//! `proxy_get_state` and `proxy_invoke_service`, and two that Layotto's
//! users asked for (mosn/layotto#192): `proxy_set_state(store, key,
//! value)` and `proxy_publish_event(pubsub, topic, data)`. WASI's
//! `fd_write` (to the log), `proc_exit` (a trap), clocks, random and
//! empty args and environment are served so that TinyGo and
//! AssemblyScript guests link; any other import answers "unimplemented"
//! (proxy-wasm status 12, WASI errno 52) when called.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::runtime::Handle;
use tracing::{debug, error, info, trace, warn};
use wasmer::{
    ExternType, Function, FunctionEnv, FunctionEnvMut, FunctionType, Imports, Instance, Memory, Module, RuntimeError,
    Store, Type, Value,
};
use wasmer_middlewares::metering::{MeteringPoints, get_remaining_points, set_remaining_points};

use super::{FunctionHost, FunctionRequest, FunctionResponse, GuestError};

/// The ABI version exports Layotto's guests carry.
pub const ABI_VERSIONS: [&str; 2] = ["proxy_abi_version_0_1_0", "proxy_abi_version_0_2_0"];

/// proxy-wasm statuses.
mod status {
    pub const OK: i32 = 0;
    pub const NOT_FOUND: i32 = 1;
    pub const BAD_ARGUMENT: i32 = 2;
    pub const INVALID_MEMORY_ACCESS: i32 = 6;
    pub const INTERNAL_FAILURE: i32 = 10;
    pub const UNIMPLEMENTED: i32 = 12;
}

/// Buffer types (Layotto's fork adds call data, 8).
mod buffer {
    pub const HTTP_REQUEST_BODY: i32 = 0;
    pub const HTTP_RESPONSE_BODY: i32 = 1;
    pub const VM_CONFIGURATION: i32 = 6;
    pub const PLUGIN_CONFIGURATION: i32 = 7;
    pub const CALL_DATA: i32 = 8;
}

/// Header map types.
mod map {
    pub const HTTP_REQUEST_HEADERS: i32 = 0;
    pub const HTTP_RESPONSE_HEADERS: i32 = 2;
}

/// The target of guests' log events: the `wasmer` type's module.
const GUEST_LOGS: &str = "layotto::components::wasm::wasmer";

/// WASI errno "function not supported".
const ENOSYS: i32 = 52;

/// What the host functions of one instance see.
pub struct Env {
    /// The function's name, for the log.
    name: Arc<str>,
    memory: Option<Memory>,
    allocate: Option<wasmer::TypedFunction<i32, i32>>,
    request_headers: Vec<(String, String)>,
    request_body: Vec<u8>,
    response_headers: Vec<(String, String)>,
    response_body: Vec<u8>,
    call_data: Vec<u8>,
    vm_config: Vec<u8>,
    plugin_config: Vec<u8>,
    /// The current request's host; `None` at start, when host calls fail.
    host: Option<Arc<dyn FunctionHost>>,
    runtime: Handle,
    /// Host calls stop waiting at this instant.
    deadline: Instant,
}

/// Settings of the instances of one function.
#[derive(Clone)]
pub struct GuestSettings {
    pub name: Arc<str>,
    pub root_context_id: i32,
    pub vm_config: Vec<u8>,
    pub plugin_config: Vec<u8>,
    /// The execution budget of a call (and of the start).
    pub budget: Duration,
    /// Metering points worth the budget.
    pub points: u64,
    /// The engine the module was compiled with: its instances' stores
    /// use it.
    pub engine: wasmer::Engine,
}

/// One instance of a function's module, with its store.
pub struct Guest {
    store: Store,
    instance: Instance,
    env: FunctionEnv<Env>,
    root: i32,
    next_context: i32,
    settings: GuestSettings,
    /// The id the guest announced.
    pub id: String,
}

fn trap(message: impl Into<String>) -> RuntimeError {
    RuntimeError::new(message.into())
}

impl Guest {
    /// Instantiates `module` and starts it as Layotto does. Blocks.
    pub fn start(module: &Module, settings: GuestSettings, runtime: Handle) -> Result<Guest, GuestError> {
        let exports: Vec<String> = module.exports().map(|e| e.name().to_owned()).collect();
        if !ABI_VERSIONS.iter().any(|v| exports.iter().any(|e| e == v)) {
            return Err(GuestError::Abi(format!(
                "the module exports neither {} nor {}",
                ABI_VERSIONS[0], ABI_VERSIONS[1]
            )));
        }
        if !exports.iter().any(|e| e == "proxy_get_id") {
            return Err(GuestError::Abi("the module does not export proxy_get_id".into()));
        }
        let mut store = Store::new(settings.engine.clone());
        let env = FunctionEnv::new(
            &mut store,
            Env {
                name: settings.name.clone(),
                memory: None,
                allocate: None,
                request_headers: Vec::new(),
                request_body: Vec::new(),
                response_headers: Vec::new(),
                response_body: Vec::new(),
                call_data: Vec::new(),
                vm_config: settings.vm_config.clone(),
                plugin_config: settings.plugin_config.clone(),
                host: None,
                runtime,
                deadline: Instant::now() + settings.budget,
            },
        );
        let imports = imports_for(module, &mut store, &env)?;
        let instance = Instance::new(&mut store, module, &imports).map_err(|e| GuestError::Trap(e.to_string()))?;
        let memory = instance
            .exports
            .get_memory("memory")
            .map_err(|_| GuestError::Abi("the module does not export its memory as \"memory\"".into()))?
            .clone();
        let allocate = ["proxy_on_memory_allocate", "malloc"]
            .iter()
            .find_map(|name| instance.exports.get_typed_function::<i32, i32>(&store, name).ok())
            .ok_or_else(|| {
                GuestError::Abi(
                    "the module exports no allocator (proxy_on_memory_allocate or malloc) of (i32) -> i32".into(),
                )
            })?;
        {
            let data = env.as_mut(&mut store);
            data.memory = Some(memory);
            data.allocate = Some(allocate);
        }
        let root = settings.root_context_id;
        let mut guest = Guest {
            store,
            instance,
            env,
            root,
            next_context: root,
            settings,
            id: String::new(),
        };
        guest.metered(|g| {
            for start in ["_start", "_initialize"] {
                if g.instance.exports.get_function(start).is_ok() {
                    g.call(start, &[])?;
                    break;
                }
            }
            g.call("proxy_get_id", &[])?;
            Ok(())
        })?;
        let id = std::mem::take(&mut guest.env.as_mut(&mut guest.store).call_data);
        let id = String::from_utf8(id).map_err(|_| GuestError::Abi("the function id is not UTF-8".into()))?;
        if id.is_empty() {
            return Err(GuestError::Abi(
                "proxy_get_id wrote no function id to the call-data buffer (type 8)".into(),
            ));
        }
        guest.id = id;
        let (vm_len, plugin_len) = (
            len_i32(&guest.settings.vm_config),
            len_i32(&guest.settings.plugin_config),
        );
        guest.metered(|g| {
            g.call("proxy_on_context_create", &[root, 0])?;
            g.call("proxy_on_vm_start", &[root, vm_len])?;
            g.call("proxy_on_configure", &[root, plugin_len])?;
            Ok(())
        })?;
        Ok(guest)
    }

    /// Serves one request. An error leaves the instance unusable: drop it.
    pub fn serve(
        &mut self,
        request: FunctionRequest,
        host: Arc<dyn FunctionHost>,
    ) -> Result<FunctionResponse, GuestError> {
        let n_headers = i32::try_from(request.headers.len()).unwrap_or(i32::MAX);
        let body_len = len_i32(&request.body);
        let has_body = !request.body.is_empty();
        {
            let data = self.env.as_mut(&mut self.store);
            data.request_headers = request.headers;
            data.request_body = request.body;
            data.response_headers.clear();
            data.response_body.clear();
            data.host = Some(host);
        }
        self.next_context = self.next_context.checked_add(1).unwrap_or(self.root.saturating_add(1));
        if self.next_context == self.root {
            self.next_context = self.next_context.wrapping_add(1);
        }
        let (ctx, root) = (self.next_context, self.root);
        let outcome = self.metered(|g| {
            g.call("proxy_on_context_create", &[ctx, root])?;
            let action = g.call("proxy_on_request_headers", &[ctx, n_headers, i32::from(!has_body)])?;
            if action.unwrap_or(0) != 0 {
                return Err(Stop::Stopped("paused at the request headers"));
            }
            if has_body {
                let action = g.call("proxy_on_request_body", &[ctx, body_len, 1])?;
                if action.unwrap_or(0) != 0 {
                    return Err(Stop::Stopped("paused at the request body"));
                }
            }
            g.call("proxy_on_done", &[ctx])?;
            g.call("proxy_on_delete", &[ctx])?;
            Ok(())
        });
        let data = self.env.as_mut(&mut self.store);
        data.host = None;
        data.request_body = Vec::new();
        outcome?;
        Ok(FunctionResponse {
            headers: std::mem::take(&mut data.response_headers),
            body: std::mem::take(&mut data.response_body),
        })
    }

    /// Runs `f` with the budget's points and deadline set.
    fn metered(&mut self, f: impl FnOnce(&mut Self) -> Result<(), Stop>) -> Result<(), GuestError> {
        set_remaining_points(&mut self.store, &self.instance, self.settings.points);
        self.env.as_mut(&mut self.store).deadline = Instant::now() + self.settings.budget;
        match f(self) {
            Ok(()) => Ok(()),
            Err(Stop::Stopped(why)) => Err(GuestError::Stopped(why)),
            Err(Stop::Abi(why)) => Err(GuestError::Abi(why)),
            Err(Stop::Trap(e)) => {
                if matches!(
                    get_remaining_points(&mut self.store, &self.instance),
                    MeteringPoints::Exhausted
                ) {
                    Err(GuestError::Budget(self.settings.budget))
                } else {
                    Err(GuestError::Trap(describe(&e)))
                }
            }
        }
    }

    /// Calls export `name` with `args`, fitted to its declared parameters;
    /// a missing export is a no-op. Answers its first result as an i32.
    fn call(&mut self, name: &str, args: &[i32]) -> Result<Option<i32>, Stop> {
        let Ok(function) = self.instance.exports.get_function(name) else {
            return Ok(None);
        };
        let function = function.clone();
        let ty = function.ty(&self.store);
        let params = ty
            .params()
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let v = args.get(i).copied().unwrap_or(0);
                match t {
                    Type::I32 => Ok(Value::I32(v)),
                    Type::I64 => Ok(Value::I64(i64::from(v))),
                    other => Err(Stop::Abi(format!("{name} takes a {other:?} parameter"))),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let results = function.call(&mut self.store, &params).map_err(Stop::Trap)?;
        Ok(results.first().and_then(|v| match v {
            Value::I32(v) => Some(*v),
            Value::I64(v) => i32::try_from(*v).ok(),
            _ => None,
        }))
    }
}

enum Stop {
    Trap(RuntimeError),
    Abi(String),
    Stopped(&'static str),
}

/// A trap's message with the guest's frames, short.
fn describe(e: &RuntimeError) -> String {
    let message = e.message();
    let frames: Vec<String> = e
        .trace()
        .iter()
        .take(3)
        .filter_map(|f| f.function_name().map(str::to_owned))
        .collect();
    if frames.is_empty() {
        message
    } else {
        format!("{message} (in {})", frames.join(" < "))
    }
}

fn len_i32(bytes: &[u8]) -> i32 {
    i32::try_from(bytes.len()).unwrap_or(i32::MAX)
}

/// The guest-declared pointer or length as an offset.
fn offset(v: i32) -> u64 {
    u64::from(v as u32)
}

fn read_bytes(env: &FunctionEnvMut<Env>, ptr: i32, len: i32) -> Result<Vec<u8>, i32> {
    let memory = env.data().memory.as_ref().ok_or(status::INTERNAL_FAILURE)?;
    let view = memory.view(env);
    let len = usize::try_from(len as u32).map_err(|_| status::BAD_ARGUMENT)?;
    if offset(ptr).saturating_add(len as u64) > view.data_size() {
        return Err(status::INVALID_MEMORY_ACCESS);
    }
    let mut out = vec![0u8; len];
    view.read(offset(ptr), &mut out)
        .map_err(|_| status::INVALID_MEMORY_ACCESS)?;
    Ok(out)
}

fn read_string(env: &FunctionEnvMut<Env>, ptr: i32, len: i32) -> Result<String, i32> {
    String::from_utf8(read_bytes(env, ptr, len)?).map_err(|_| status::BAD_ARGUMENT)
}

fn write_bytes(env: &FunctionEnvMut<Env>, ptr: i32, bytes: &[u8]) -> Result<(), i32> {
    let memory = env.data().memory.as_ref().ok_or(status::INTERNAL_FAILURE)?;
    memory
        .view(env)
        .write(offset(ptr), bytes)
        .map_err(|_| status::INVALID_MEMORY_ACCESS)
}

/// Copies `bytes` into memory the guest allocates, and writes where and
/// how long to `ret_ptr` and `ret_len`.
fn hand_over(env: &mut FunctionEnvMut<Env>, bytes: &[u8], ret_ptr: i32, ret_len: i32) -> Result<i32, RuntimeError> {
    let Ok(len) = i32::try_from(bytes.len()) else {
        return Ok(status::BAD_ARGUMENT);
    };
    let Some(allocate) = env.data().allocate.clone() else {
        return Ok(status::INTERNAL_FAILURE);
    };
    // An empty answer still gets a pointer the guest may free.
    let ptr = allocate.call(env, len.max(1))?;
    if ptr == 0 {
        return Err(trap("the guest's allocator returned 0"));
    }
    let written = write_bytes(env, ptr, bytes)
        .and_then(|()| write_bytes(env, ret_ptr, &ptr.to_le_bytes()))
        .and_then(|()| write_bytes(env, ret_len, &len.to_le_bytes()));
    Ok(match written {
        Ok(()) => status::OK,
        Err(code) => code,
    })
}

/// Runs a host future on the sidecar's event loop and waits for it, up to
/// the call's deadline.
fn block_on<T: Send + 'static>(
    env: &FunctionEnvMut<Env>,
    what: &'static str,
    f: impl FnOnce(Arc<dyn FunctionHost>) -> futures::future::BoxFuture<'static, Result<T, String>>,
) -> Result<T, String> {
    let data = env.data();
    let Some(host) = data.host.clone() else {
        return Err(format!("{what} is not available while the function starts"));
    };
    let left = data.deadline.saturating_duration_since(Instant::now());
    let future = f(host);
    let task = data.runtime.spawn(async move {
        tokio::time::timeout(left, future)
            .await
            .unwrap_or_else(|_| Err(format!("{what} ran past the function's budget")))
    });
    futures::executor::block_on(task).unwrap_or_else(|e| Err(format!("{what} failed: {e}")))
}

fn buffer_of(data: &mut Env, kind: i32) -> Option<&mut Vec<u8>> {
    match kind {
        buffer::HTTP_REQUEST_BODY => Some(&mut data.request_body),
        buffer::HTTP_RESPONSE_BODY => Some(&mut data.response_body),
        buffer::VM_CONFIGURATION => Some(&mut data.vm_config),
        buffer::PLUGIN_CONFIGURATION => Some(&mut data.plugin_config),
        buffer::CALL_DATA => Some(&mut data.call_data),
        _ => None,
    }
}

fn map_of(data: &mut Env, kind: i32) -> Option<&mut Vec<(String, String)>> {
    match kind {
        map::HTTP_REQUEST_HEADERS => Some(&mut data.request_headers),
        map::HTTP_RESPONSE_HEADERS => Some(&mut data.response_headers),
        _ => None,
    }
}

/// proxy-wasm's serialized header map: the pair count, each pair's key
/// and value lengths, then each key and value with a 0 after it.
fn serialize_pairs(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

fn deserialize_pairs(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    let word = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let n = word(0)?;
    let mut sizes = Vec::new();
    for i in 0..n {
        let at = 4usize.checked_add(i.checked_mul(8)?)?;
        sizes.push((word(at)?, word(at.checked_add(4)?)?));
    }
    let mut at = 4usize.checked_add(n.checked_mul(8)?)?;
    let mut pairs = Vec::with_capacity(n);
    for (kl, vl) in sizes {
        let key = bytes.get(at..at.checked_add(kl)?)?;
        at = at.checked_add(kl)?.checked_add(1)?;
        let value = bytes.get(at..at.checked_add(vl)?)?;
        at = at.checked_add(vl)?.checked_add(1)?;
        pairs.push((
            String::from_utf8_lossy(key).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    Some(pairs)
}

fn code(result: Result<i32, i32>) -> i32 {
    result.unwrap_or_else(|c| c)
}

// ---- proxy-wasm imports ----

fn proxy_log(env: FunctionEnvMut<Env>, level: i32, ptr: i32, len: i32) -> i32 {
    code(read_string(&env, ptr, len).map(|message| {
        // A guest's logs are its function type's (`/actuator/logger` with
        // `wasm/wasmer` turns them up).
        let name = &*env.data().name;
        match level {
            0 => trace!(target: GUEST_LOGS, function = name, "{message}"),
            1 => debug!(target: GUEST_LOGS, function = name, "{message}"),
            2 => info!(target: GUEST_LOGS, function = name, "{message}"),
            3 => warn!(target: GUEST_LOGS, function = name, "{message}"),
            _ => error!(target: GUEST_LOGS, function = name, "{message}"),
        }
        status::OK
    }))
}

fn proxy_get_buffer_bytes(
    mut env: FunctionEnvMut<Env>,
    kind: i32,
    start: i32,
    max: i32,
    ret_ptr: i32,
    ret_len: i32,
) -> Result<i32, RuntimeError> {
    let Some(buffer) = buffer_of(env.data_mut(), kind) else {
        return Ok(status::BAD_ARGUMENT);
    };
    let start = (start as u32 as usize).min(buffer.len());
    let end = start.saturating_add(max as u32 as usize).min(buffer.len());
    let bytes = buffer[start..end].to_vec();
    hand_over(&mut env, &bytes, ret_ptr, ret_len)
}

fn proxy_set_buffer_bytes(mut env: FunctionEnvMut<Env>, kind: i32, start: i32, size: i32, ptr: i32, len: i32) -> i32 {
    let bytes = match read_bytes(&env, ptr, len) {
        Ok(b) => b,
        Err(c) => return c,
    };
    let Some(buffer) = buffer_of(env.data_mut(), kind) else {
        return status::BAD_ARGUMENT;
    };
    let start = (start as u32 as usize).min(buffer.len());
    let end = start.saturating_add(size as u32 as usize).min(buffer.len());
    if start == 0 && end >= buffer.len() {
        *buffer = bytes;
    } else {
        buffer.splice(start..end, bytes);
    }
    status::OK
}

fn proxy_get_buffer_status(mut env: FunctionEnvMut<Env>, kind: i32, len_ptr: i32, flags_ptr: i32) -> i32 {
    let Some(buffer) = buffer_of(env.data_mut(), kind) else {
        return status::BAD_ARGUMENT;
    };
    let len = len_i32(buffer);
    code(
        write_bytes(&env, len_ptr, &len.to_le_bytes())
            .and_then(|()| write_bytes(&env, flags_ptr, &0i32.to_le_bytes()))
            .map(|()| status::OK),
    )
}

fn proxy_get_header_map_pairs(
    mut env: FunctionEnvMut<Env>,
    kind: i32,
    ret_ptr: i32,
    ret_len: i32,
) -> Result<i32, RuntimeError> {
    let Some(pairs) = map_of(env.data_mut(), kind) else {
        return Ok(status::BAD_ARGUMENT);
    };
    let bytes = serialize_pairs(pairs);
    hand_over(&mut env, &bytes, ret_ptr, ret_len)
}

fn proxy_set_header_map_pairs(mut env: FunctionEnvMut<Env>, kind: i32, ptr: i32, len: i32) -> i32 {
    let bytes = match read_bytes(&env, ptr, len) {
        Ok(b) => b,
        Err(c) => return c,
    };
    let Some(pairs) = deserialize_pairs(&bytes) else {
        return status::BAD_ARGUMENT;
    };
    let Some(map) = map_of(env.data_mut(), kind) else {
        return status::BAD_ARGUMENT;
    };
    *map = pairs;
    status::OK
}

fn proxy_get_header_map_size(mut env: FunctionEnvMut<Env>, kind: i32, ret_size: i32) -> i32 {
    let Some(pairs) = map_of(env.data_mut(), kind) else {
        return status::BAD_ARGUMENT;
    };
    let size = len_i32(&serialize_pairs(pairs));
    code(write_bytes(&env, ret_size, &size.to_le_bytes()).map(|()| status::OK))
}

fn proxy_get_header_map_value(
    mut env: FunctionEnvMut<Env>,
    kind: i32,
    key_ptr: i32,
    key_len: i32,
    ret_ptr: i32,
    ret_len: i32,
) -> Result<i32, RuntimeError> {
    let key = match read_string(&env, key_ptr, key_len) {
        Ok(k) => k.to_ascii_lowercase(),
        Err(c) => return Ok(c),
    };
    let Some(pairs) = map_of(env.data_mut(), kind) else {
        return Ok(status::BAD_ARGUMENT);
    };
    let Some(value) = pairs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(&key))
        .map(|(_, v)| v.clone())
    else {
        return Ok(status::NOT_FOUND);
    };
    hand_over(&mut env, value.as_bytes(), ret_ptr, ret_len)
}

fn set_header(mut env: FunctionEnvMut<Env>, kind: i32, kp: i32, kl: i32, vp: i32, vl: i32, replace: bool) -> i32 {
    let (key, value) = match (read_string(&env, kp, kl), read_string(&env, vp, vl)) {
        (Ok(k), Ok(v)) => (k.to_ascii_lowercase(), v),
        (Err(c), _) | (_, Err(c)) => return c,
    };
    let Some(pairs) = map_of(env.data_mut(), kind) else {
        return status::BAD_ARGUMENT;
    };
    if replace {
        pairs.retain(|(k, _)| !k.eq_ignore_ascii_case(&key));
    }
    pairs.push((key, value));
    status::OK
}

fn proxy_add_header_map_value(env: FunctionEnvMut<Env>, kind: i32, kp: i32, kl: i32, vp: i32, vl: i32) -> i32 {
    set_header(env, kind, kp, kl, vp, vl, false)
}

fn proxy_replace_header_map_value(env: FunctionEnvMut<Env>, kind: i32, kp: i32, kl: i32, vp: i32, vl: i32) -> i32 {
    set_header(env, kind, kp, kl, vp, vl, true)
}

fn proxy_remove_header_map_value(mut env: FunctionEnvMut<Env>, kind: i32, kp: i32, kl: i32) -> i32 {
    let key = match read_string(&env, kp, kl) {
        Ok(k) => k,
        Err(c) => return c,
    };
    let Some(pairs) = map_of(env.data_mut(), kind) else {
        return status::BAD_ARGUMENT;
    };
    pairs.retain(|(k, _)| !k.eq_ignore_ascii_case(&key));
    status::OK
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn proxy_get_current_time_nanoseconds(env: FunctionEnvMut<Env>, ret: i32) -> i32 {
    code(write_bytes(&env, ret, &now_nanos().to_le_bytes()).map(|()| status::OK))
}

fn proxy_ok(_env: FunctionEnvMut<Env>) -> i32 {
    status::OK
}

fn proxy_set_effective_context(_env: FunctionEnvMut<Env>, _ctx: i32) -> i32 {
    status::OK
}

fn proxy_get_state(
    mut env: FunctionEnvMut<Env>,
    store_ptr: i32,
    store_len: i32,
    key_ptr: i32,
    key_len: i32,
    ret_ptr: i32,
    ret_len: i32,
) -> Result<i32, RuntimeError> {
    let (store, key) = match (
        read_string(&env, store_ptr, store_len),
        read_string(&env, key_ptr, key_len),
    ) {
        (Ok(s), Ok(k)) => (s, k),
        (Err(c), _) | (_, Err(c)) => return Ok(c),
    };
    let answer = block_on(&env, "proxy_get_state", move |host| {
        Box::pin(async move { host.get_state(store, key).await })
    });
    match answer {
        Ok(Some(value)) => hand_over(&mut env, &value, ret_ptr, ret_len),
        Ok(None) => hand_over(&mut env, &[], ret_ptr, ret_len),
        Err(e) => {
            warn!(function = &*env.data().name, error = %e, "proxy_get_state failed");
            Ok(status::INTERNAL_FAILURE)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn proxy_invoke_service(
    mut env: FunctionEnvMut<Env>,
    id_ptr: i32,
    id_len: i32,
    method_ptr: i32,
    method_len: i32,
    param_ptr: i32,
    param_len: i32,
    ret_ptr: i32,
    ret_len: i32,
) -> Result<i32, RuntimeError> {
    let read = (
        read_string(&env, id_ptr, id_len),
        read_string(&env, method_ptr, method_len),
        read_bytes(&env, param_ptr, param_len),
    );
    let (id, method, param) = match read {
        (Ok(i), Ok(m), Ok(p)) => (i, m, p),
        (Err(c), _, _) | (_, Err(c), _) | (_, _, Err(c)) => return Ok(c),
    };
    let answer = block_on(&env, "proxy_invoke_service", move |host| {
        Box::pin(async move { host.invoke(id, method, param).await })
    });
    match answer {
        Ok(value) => hand_over(&mut env, &value, ret_ptr, ret_len),
        Err(e) => {
            warn!(function = &*env.data().name, error = %e, "proxy_invoke_service failed");
            Ok(status::INTERNAL_FAILURE)
        }
    }
}

fn three_strings(
    env: &FunctionEnvMut<Env>,
    a: (i32, i32),
    b: (i32, i32),
    c: (i32, i32),
) -> Result<(String, String, Vec<u8>), i32> {
    Ok((
        read_string(env, a.0, a.1)?,
        read_string(env, b.0, b.1)?,
        read_bytes(env, c.0, c.1)?,
    ))
}

fn proxy_set_state(env: FunctionEnvMut<Env>, sp: i32, sl: i32, kp: i32, kl: i32, vp: i32, vl: i32) -> i32 {
    let (store, key, value) = match three_strings(&env, (sp, sl), (kp, kl), (vp, vl)) {
        Ok(t) => t,
        Err(c) => return c,
    };
    match block_on(&env, "proxy_set_state", move |host| {
        Box::pin(async move { host.save_state(store, key, value).await })
    }) {
        Ok(()) => status::OK,
        Err(e) => {
            warn!(function = &*env.data().name, error = %e, "proxy_set_state failed");
            status::INTERNAL_FAILURE
        }
    }
}

fn proxy_publish_event(env: FunctionEnvMut<Env>, pp: i32, pl: i32, tp: i32, tl: i32, dp: i32, dl: i32) -> i32 {
    let (pubsub, topic, data) = match three_strings(&env, (pp, pl), (tp, tl), (dp, dl)) {
        Ok(t) => t,
        Err(c) => return c,
    };
    match block_on(&env, "proxy_publish_event", move |host| {
        Box::pin(async move { host.publish(pubsub, topic, data).await })
    }) {
        Ok(()) => status::OK,
        Err(e) => {
            warn!(function = &*env.data().name, error = %e, "proxy_publish_event failed");
            status::INTERNAL_FAILURE
        }
    }
}

/// AssemblyScript's `abort(message, file, line, column)`.
fn as_abort(env: FunctionEnvMut<Env>, message: i32, _file: i32, line: i32, column: i32) -> Result<(), RuntimeError> {
    // AssemblyScript strings are UTF-16 with their byte length at ptr - 4.
    let text = read_bytes(&env, message.wrapping_sub(4), 4)
        .ok()
        .map(|l| u32::from_le_bytes([l[0], l[1], l[2], l[3]]).min(4096) as i32)
        .and_then(|len| read_bytes(&env, message, len).ok())
        .map(|bytes| {
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        })
        .unwrap_or_default();
    Err(trap(format!("abort: {text} at {line}:{column}")))
}

// ---- WASI, enough for TinyGo and AssemblyScript guests to link ----

fn wasi_fd_write(env: FunctionEnvMut<Env>, fd: i32, iovs: i32, iovs_len: i32, nwritten: i32) -> i32 {
    let mut text = Vec::new();
    for i in 0..iovs_len.clamp(0, 1024) {
        let Ok(iov) = read_bytes(&env, iovs.wrapping_add(i.wrapping_mul(8)), 8) else {
            return 21; // EFAULT
        };
        let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
        let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
        match read_bytes(&env, ptr, len) {
            Ok(b) => text.extend_from_slice(&b),
            Err(_) => return 21,
        }
    }
    let message = String::from_utf8_lossy(&text);
    let message = message.trim_end();
    if !message.is_empty() {
        info!(target: GUEST_LOGS, function = &*env.data().name, fd, "{message}");
    }
    match write_bytes(&env, nwritten, &len_i32(&text).to_le_bytes()) {
        Ok(()) => 0,
        Err(_) => 21,
    }
}

fn wasi_proc_exit(_env: FunctionEnvMut<Env>, code: i32) -> Result<(), RuntimeError> {
    Err(trap(format!("proc_exit({code})")))
}

fn wasi_sizes_get(env: FunctionEnvMut<Env>, count: i32, size: i32) -> i32 {
    match write_bytes(&env, count, &0i32.to_le_bytes()).and_then(|()| write_bytes(&env, size, &0i32.to_le_bytes())) {
        Ok(()) => 0,
        Err(_) => 21,
    }
}

fn wasi_get(_env: FunctionEnvMut<Env>, _a: i32, _b: i32) -> i32 {
    0
}

fn wasi_clock_time_get(env: FunctionEnvMut<Env>, _id: i32, _precision: i64, ret: i32) -> i32 {
    match write_bytes(&env, ret, &now_nanos().to_le_bytes()) {
        Ok(()) => 0,
        Err(_) => 21,
    }
}

fn wasi_random_get(env: FunctionEnvMut<Env>, ptr: i32, len: i32) -> i32 {
    let len = (len as u32).min(1 << 20) as usize;
    let bytes: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
    match write_bytes(&env, ptr, &bytes) {
        Ok(()) => 0,
        Err(_) => 21,
    }
}

/// The imports `module` declares: ours where we serve one with the same
/// signature, a stub answering "unimplemented" for any other function.
fn imports_for(module: &Module, store: &mut Store, env: &FunctionEnv<Env>) -> Result<Imports, GuestError> {
    let mut imports = Imports::new();
    for import in module.imports() {
        let (namespace, name) = (import.module(), import.name());
        let ExternType::Function(wanted) = import.ty() else {
            return Err(GuestError::Abi(format!(
                "the module imports {namespace}.{name}, which is not a function; only functions are provided"
            )));
        };
        let wasi = namespace.starts_with("wasi");
        let ours = if wasi {
            match name {
                "fd_write" => Some(Function::new_typed_with_env(store, env, wasi_fd_write)),
                "proc_exit" => Some(Function::new_typed_with_env(store, env, wasi_proc_exit)),
                "args_sizes_get" | "environ_sizes_get" => {
                    Some(Function::new_typed_with_env(store, env, wasi_sizes_get))
                }
                "args_get" | "environ_get" => Some(Function::new_typed_with_env(store, env, wasi_get)),
                "clock_time_get" => Some(Function::new_typed_with_env(store, env, wasi_clock_time_get)),
                "random_get" => Some(Function::new_typed_with_env(store, env, wasi_random_get)),
                _ => None,
            }
        } else {
            match name {
                "proxy_log" => Some(Function::new_typed_with_env(store, env, proxy_log)),
                "proxy_get_buffer_bytes" => Some(Function::new_typed_with_env(store, env, proxy_get_buffer_bytes)),
                "proxy_set_buffer_bytes" => Some(Function::new_typed_with_env(store, env, proxy_set_buffer_bytes)),
                "proxy_get_buffer_status" => Some(Function::new_typed_with_env(store, env, proxy_get_buffer_status)),
                "proxy_get_header_map_pairs" => {
                    Some(Function::new_typed_with_env(store, env, proxy_get_header_map_pairs))
                }
                "proxy_set_header_map_pairs" => {
                    Some(Function::new_typed_with_env(store, env, proxy_set_header_map_pairs))
                }
                "proxy_get_header_map_size" => {
                    Some(Function::new_typed_with_env(store, env, proxy_get_header_map_size))
                }
                "proxy_get_header_map_value" => {
                    Some(Function::new_typed_with_env(store, env, proxy_get_header_map_value))
                }
                "proxy_add_header_map_value" => {
                    Some(Function::new_typed_with_env(store, env, proxy_add_header_map_value))
                }
                "proxy_replace_header_map_value" => {
                    Some(Function::new_typed_with_env(store, env, proxy_replace_header_map_value))
                }
                "proxy_remove_header_map_value" => {
                    Some(Function::new_typed_with_env(store, env, proxy_remove_header_map_value))
                }
                "proxy_get_current_time_nanoseconds" => Some(Function::new_typed_with_env(
                    store,
                    env,
                    proxy_get_current_time_nanoseconds,
                )),
                "proxy_set_effective_context" => {
                    Some(Function::new_typed_with_env(store, env, proxy_set_effective_context))
                }
                "proxy_done" => Some(Function::new_typed_with_env(store, env, proxy_ok)),
                "proxy_get_state" => Some(Function::new_typed_with_env(store, env, proxy_get_state)),
                "proxy_invoke_service" => Some(Function::new_typed_with_env(store, env, proxy_invoke_service)),
                "proxy_set_state" => Some(Function::new_typed_with_env(store, env, proxy_set_state)),
                "proxy_publish_event" => Some(Function::new_typed_with_env(store, env, proxy_publish_event)),
                "abort" => Some(Function::new_typed_with_env(store, env, as_abort)),
                _ => None,
            }
        };
        let function = match ours {
            Some(f) if f.ty(store) == *wanted => f,
            Some(f) => {
                // A guest built against another ABI revision: it links, and
                // the call answers "unimplemented" should it ever be made.
                warn!(
                    import = %format!("{namespace}.{name}"),
                    wanted = %wanted,
                    provided = %f.ty(store),
                    "The guest declares a host call with another signature; it is served as unimplemented"
                );
                unimplemented_stub(store, env, wanted.clone(), wasi, format!("{namespace}.{name}"))
            }
            None => unimplemented_stub(store, env, wanted.clone(), wasi, format!("{namespace}.{name}")),
        };
        imports.define(namespace, name, function);
    }
    Ok(imports)
}

/// An import the host does not serve: answers "unimplemented" (and logs
/// it once per instance).
fn unimplemented_stub(
    store: &mut Store,
    env: &FunctionEnv<Env>,
    ty: FunctionType,
    wasi: bool,
    what: String,
) -> Function {
    let logged = AtomicBool::new(false);
    let code = if wasi { ENOSYS } else { status::UNIMPLEMENTED };
    let results: Vec<Type> = ty.results().to_vec();
    Function::new_with_env(store, env, ty, move |env: FunctionEnvMut<Env>, _args: &[Value]| {
        if !logged.swap(true, Ordering::Relaxed) {
            debug!(function = &*env.data().name, import = %what, "The guest called an import the host does not serve");
        }
        Ok(results
            .iter()
            .map(|t| match t {
                Type::I64 => Value::I64(i64::from(code)),
                Type::F32 => Value::F32(0.0),
                Type::F64 => Value::F64(0.0),
                _ => Value::I32(code),
            })
            .collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_maps_round_trip_and_a_short_one_is_refused() {
        let pairs = vec![
            ("id".to_owned(), "id_1".to_owned()),
            ("x-empty".to_owned(), String::new()),
        ];
        let bytes = serialize_pairs(&pairs);
        assert_eq!(&bytes[..4], &2u32.to_le_bytes());
        assert_eq!(deserialize_pairs(&bytes), Some(pairs));
        // (The last terminator may be left out.)
        for cut in 0..bytes.len() - 1 {
            assert_eq!(deserialize_pairs(&bytes[..cut]), None, "cut at {cut}");
        }
        // A count far beyond the bytes does not allocate or panic.
        assert_eq!(deserialize_pairs(&u32::MAX.to_le_bytes()), None);
    }
}
