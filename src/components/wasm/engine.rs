//! Compiling modules, with limits and caches.
//!
//! - **Engines**: a cranelift engine per compiled module (wasmer's metering
//!   keeps per-module state). Each carries wasmer's metering middleware
//!   (one point per operator), so a call can be given a budget a tight
//!   loop cannot escape, and tunables that cap every linear memory at the
//!   limit (`memory.grow` past it fails; a guest that insists traps).
//! - **The budget** is time, as operators run at a rate measured once per
//!   process ([`points_per_ms`]); the caller also stops waiting when the
//!   time is up, whatever the guest does in host calls.
//! - **Caches**: a compiled module is kept in memory by its hash and limit
//!   (a moka cache: a new instance or a restarted function does not
//!   recompile), and written to disk as wasmer's serialized artifact (a
//!   restarted sidecar loads it instead of compiling).
//!
//! The one place the crate allows `unsafe`: wasmer's `Tunables` methods
//! that create memories are unsafe to implement (they pass on a location
//! wasmer owns), and loading an artifact is unsafe because a tampered file
//! could run code; ours are written by this module into its own cache.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, Instant};

use wasmer::sys::vm::{MemoryError, MemoryStyle, TableStyle, VMMemory, VMMemoryDefinition, VMTable, VMTableDefinition};
use wasmer::sys::{BaseTunables, CompilerConfig, Cranelift, EngineBuilder, NativeEngineExt, Tunables};
use wasmer::wasmparser::Operator;
use wasmer::{Engine, Instance, MemoryType, Module, Pages, Store, TableType, imports};
use wasmer_middlewares::Metering;
use wasmer_middlewares::metering::{MeteringPoints, get_remaining_points, set_remaining_points};

/// The wasmer release artifacts are written by (Cargo.toml pins it).
const WASMER_VERSION: &str = "7.4.2";

/// A module's SHA-256.
pub fn module_hash(wasm: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(wasm).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The size of a WebAssembly page.
pub const PAGE: u64 = 65_536;

/// Caps every linear memory of an instance at `max` pages.
struct LimitingTunables {
    base: BaseTunables,
    max: Pages,
}

impl LimitingTunables {
    /// The memory type an instance gets: its own maximum or the limit,
    /// whichever is lower.
    fn adjust(&self, ty: &MemoryType) -> MemoryType {
        let mut adjusted = *ty;
        adjusted.maximum = Some(ty.maximum.map_or(self.max, |own| own.min(self.max)));
        adjusted
    }

    fn validate(&self, ty: &MemoryType) -> Result<(), MemoryError> {
        if ty.minimum > self.max {
            return Err(MemoryError::Generic(format!(
                "the module asks for {} pages of memory at start; the limit is {} pages",
                ty.minimum.0, self.max.0
            )));
        }
        Ok(())
    }
}

impl Tunables for LimitingTunables {
    fn memory_style(&self, memory: &MemoryType) -> MemoryStyle {
        self.base.memory_style(&self.adjust(memory))
    }

    fn table_style(&self, table: &TableType) -> TableStyle {
        self.base.table_style(table)
    }

    fn create_host_memory(&self, ty: &MemoryType, style: &MemoryStyle) -> Result<VMMemory, MemoryError> {
        let adjusted = self.adjust(ty);
        self.validate(&adjusted)?;
        self.base.create_host_memory(&adjusted, style)
    }

    unsafe fn create_vm_memory(
        &self,
        ty: &MemoryType,
        style: &MemoryStyle,
        vm_definition_location: NonNull<VMMemoryDefinition>,
    ) -> Result<VMMemory, MemoryError> {
        let adjusted = self.adjust(ty);
        self.validate(&adjusted)?;
        // SAFETY: the location is the one wasmer handed us, passed on
        // unchanged; only the memory type's maximum is lowered.
        unsafe { self.base.create_vm_memory(&adjusted, style, vm_definition_location) }
    }

    fn create_host_table(&self, ty: &TableType, style: &TableStyle) -> Result<VMTable, String> {
        self.base.create_host_table(ty, style)
    }

    unsafe fn create_vm_table(
        &self,
        ty: &TableType,
        style: &TableStyle,
        vm_definition_location: NonNull<VMTableDefinition>,
    ) -> Result<VMTable, String> {
        // SAFETY: passed on unchanged.
        unsafe { self.base.create_vm_table(ty, style, vm_definition_location) }
    }
}

/// One point per operator.
fn cost(_: &Operator) -> u64 {
    1
}

/// A fresh engine for memories of at most `max_pages`. Fresh because
/// wasmer's metering middleware keeps per-module state: each compiled
/// module gets an engine (and a middleware) of its own, and its instances
/// use that engine.
pub fn engine(max_pages: u32) -> Engine {
    let mut compiler = Cranelift::default();
    compiler.push_middleware(Arc::new(Metering::new(u64::MAX, cost)));
    let mut engine: Engine = EngineBuilder::new(compiler).into();
    engine.set_tunables(LimitingTunables {
        base: BaseTunables::new(),
        max: Pages(max_pages),
    });
    engine
}

/// How many operators a guest runs per millisecond on this machine,
/// measured once (a metered loop run for a fixed number of points).
pub fn points_per_ms() -> u64 {
    static RATE: OnceLock<u64> = OnceLock::new();
    *RATE.get_or_init(|| measure_rate().unwrap_or(200_000))
}

fn measure_rate() -> Option<u64> {
    const POINTS: u64 = 20_000_000;
    let wat = r#"(module (func (export "spin") (loop $l (br $l))))"#;
    let mut store = Store::new(engine(1));
    let module = Module::new(&store, wat).ok()?;
    let instance = Instance::new(&mut store, &module, &imports! {}).ok()?;
    let spin = instance.exports.get_function("spin").ok()?.clone();
    let mut best = u64::MAX;
    // The fastest of three: a busy machine only makes budgets shorter.
    for _ in 0..3 {
        set_remaining_points(&mut store, &instance, POINTS);
        let started = Instant::now();
        let _ = spin.call(&mut store, &[]);
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
        if matches!(get_remaining_points(&mut store, &instance), MeteringPoints::Exhausted) {
            best = best.min(micros);
        }
    }
    (best != u64::MAX).then(|| (POINTS.saturating_mul(1000) / best).max(1))
}

/// The points a call of `budget` may use.
pub fn budget_points(budget: Duration) -> u64 {
    let ms = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX).max(1);
    ms.saturating_mul(points_per_ms())
}

/// A compiled module and the engine its instances must use.
#[derive(Clone)]
pub struct Compiled {
    pub module: Module,
    pub engine: Engine,
}

/// Compiled modules by hash and memory limit.
fn memory_cache() -> &'static moka::sync::Cache<(Vec<u8>, u32), Compiled> {
    static CACHE: LazyLock<moka::sync::Cache<(Vec<u8>, u32), Compiled>> =
        LazyLock::new(|| moka::sync::Cache::builder().max_capacity(256).build());
    &CACHE
}

/// Where a module came from, for the log and the benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Memory,
    Disk,
    Compiled,
}

/// The compiled form of `wasm` for `max_pages`: from memory, from the
/// artifact in `cache_dir`, or compiled (and then kept in both). Blocks:
/// run it off the event loop.
pub fn load(wasm: &[u8], max_pages: u32, cache_dir: Option<&Path>) -> Result<(Compiled, Source), String> {
    let hash = module_hash(wasm);
    let key = (hash.to_vec(), max_pages);
    if let Some(compiled) = memory_cache().get(&key) {
        return Ok((compiled, Source::Memory));
    }
    let engine = engine(max_pages);
    let artifact = cache_dir.map(|dir| artifact_path(dir, &hex(&hash), max_pages));
    if let Some(path) = artifact.as_deref().filter(|p| p.is_file()) {
        // SAFETY: the artifact is one this sidecar serialized into its own
        // cache directory for this wasmer version; the checked variant
        // validates its layout, and a file that does not load is compiled
        // afresh below.
        if let Ok(module) = unsafe { Module::deserialize_from_file(&engine, path) } {
            let compiled = Compiled { module, engine };
            memory_cache().insert(key, compiled.clone());
            return Ok((compiled, Source::Disk));
        }
    }
    let module = Module::new(&engine, wasm).map_err(|e| format!("the module does not compile: {e}"))?;
    if let Some(path) = artifact
        && let Err(e) = write_artifact(&module, &path)
    {
        tracing::warn!(path = %path.display(), error = %e, "Cannot cache the compiled module on disk");
    }
    let compiled = Compiled { module, engine };
    memory_cache().insert(key, compiled.clone());
    Ok((compiled, Source::Compiled))
}

fn artifact_path(dir: &Path, hash: &str, max_pages: u32) -> PathBuf {
    dir.join(format!("{hash}-{max_pages}p-wasmer{WASMER_VERSION}.bin"))
}

/// Writes through a temporary file, so a reader never sees half of one.
fn write_artifact(module: &Module, path: &Path) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let bytes = module.serialize().map_err(|e| e.to_string())?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &bytes).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}

/// Forgets every module compiled in memory (benchmarks measure the disk
/// and cold paths with it).
pub fn clear_memory_cache() {
    memory_cache().invalidate_all();
}

/// The default artifact directory: `$XDG_CACHE_HOME/layotto/wasm`, else
/// `$HOME/.cache/layotto/wasm`, else one under the temporary directory.
pub fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .unwrap_or_else(std::env::temp_dir);
    base.join("layotto").join("wasm")
}
