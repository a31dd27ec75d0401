//! Hot reload: the config file changes (rewritten in place, or replaced by
//! renaming a new file over it, as editors and Kubernetes ConfigMap updates
//! do), or SIGHUP arrives, and the running sidecar takes the new component
//! settings without a restart.
//!
//! The new config is loaded and validated in full first (secret references
//! included); if it is invalid nothing changes, and the reason is logged
//! and shown in readiness (`config_reload`). Otherwise, per component:
//! - added: its slot is registered, its actor started under its block's
//!   supervisor, and requests are routed to it;
//! - removed: requests stop being routed to it at once (they get
//!   INVALID_ARGUMENT naming it), its calls in flight finish, then it stops;
//! - changed (same type and queue): its actor builds the new instance
//!   while the old one serves, then swaps them (make-before-break); a new
//!   instance that fails to build leaves the old one serving;
//! - changed type or queue capacity: a new actor is started beside the old
//!   one, requests move to it once it is UP, and the old one stops after
//!   its calls in flight.
//!
//! Unchanged components are not touched. Settings that cannot change live
//! (listeners, the app, supervision, logging, subscriptions, functions, API
//! plugins) are reported as needing a restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::actors::{Blocks, Shutdown, Slot};
use crate::api::ApiContext;
use crate::api::blocks::BlockError;
use crate::api::blocks::lifecycle::Apply;
use crate::components::{BuildingBlock, ComponentSpec, Kind, secrets};
use crate::config::Config;
use crate::supervisor::{AddChild, Health, ReconfigureChild, RemoveChild, StatusRegistry, SupervisorHandle, slot_for};

/// Where a running sidecar's config comes from, to read it again.
#[derive(Clone)]
pub struct ReloadSource {
    /// Loads and validates the config as at start-up; the error names
    /// what is wrong.
    pub load: Arc<dyn Fn() -> Result<Config, String> + Send + Sync>,
    /// Files and folders whose changes trigger a reload.
    pub watch: Vec<PathBuf>,
}

/// How long calls in flight on a removed or replaced component may take
/// before it is stopped anyway.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// Changes that arrive this close together are one reload.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// What the reload task works on.
pub(super) struct Reloader {
    pub ctx: Arc<ApiContext>,
    pub supervisor: SupervisorHandle,
    pub status: Arc<StatusRegistry>,
    /// The config in force (secret references resolved).
    pub current: Config,
    pub instance: String,
    pub advertise: Option<String>,
}

/// Why a reload happened, for the log.
#[derive(Debug)]
enum Trigger {
    File,
    Signal,
}

impl Reloader {
    /// Runs until the event loop ends: applies Lifecycle requests, and,
    /// with a source, watches its files and SIGHUP and applies each change.
    pub async fn run(mut self, source: Option<ReloadSource>, mut applies: mpsc::UnboundedReceiver<Apply>) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let watched = source.as_ref().map(|s| s.watch.clone()).unwrap_or_default();
        let _watcher = watch_files(&watched, tx.clone());
        let mut hangups = match &source {
            None => None,
            Some(_) => match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(signal) => Some(signal),
                Err(e) => {
                    warn!(error = %e, "Cannot listen for SIGHUP; config reload follows file changes only");
                    None
                }
            },
        };
        let mut last_seen = fingerprint(&watched);
        loop {
            let trigger = tokio::select! {
                Some(apply) = applies.recv() => {
                    let outcome = self.apply_one(apply.kind, &apply.name, apply.metadata).await;
                    let _ = apply.reply.send(outcome);
                    continue;
                }
                Some(()) = rx.recv() => Trigger::File,
                Some(()) = async {
                    match hangups.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => Trigger::Signal,
                else => return,
            };
            // A rename-over or an editor's save comes as several events.
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            let Some(source) = &source else { continue };
            let seen = fingerprint(&source.watch);
            if matches!(trigger, Trigger::File) && seen == last_seen {
                continue;
            }
            last_seen = seen;
            info!(?trigger, "Reloading the config");
            // Pluggable component processes started or stopped since are
            // found (or forgotten) before the new config names them.
            crate::components::pluggable::discover_default().await;
            let loaded = (source.load)();
            self.reload(loaded).await;
        }
    }

    /// Lifecycle's ApplyConfiguration: the config in force with one
    /// component's metadata replaced, checked as a config file is, then
    /// applied as a reload.
    async fn apply_one(
        &mut self,
        kind: Kind,
        name: &str,
        metadata: BTreeMap<String, String>,
    ) -> Result<(), BlockError> {
        let Some(current) = self.current.components_of(kind).iter().find(|s| s.name == name) else {
            return Err(BlockError::UnknownComponent(format!("{kind}/{name}")));
        };
        let mut spec = current.clone();
        spec.metadata = metadata;
        if let Some(errors) = kind.validate(&spec)
            && !errors.is_empty()
        {
            let problems: Vec<String> = errors
                .iter()
                .map(|e| format!("metadata.{}: {}", e.key, e.message))
                .collect();
            return Err(BlockError::invalid(problems.join("; ")));
        }
        let mut next = self.current.clone();
        if let Some(slot) = next
            .components
            .get_mut(&kind)
            .and_then(|specs| specs.iter_mut().find(|s| s.name == name))
        {
            *slot = spec;
        }
        let key = format!("{kind}/{name}");
        let report = self.reload(Ok(next)).await;
        match report.iter().find(|line| line.starts_with(&key)) {
            Some(line) if line.contains("kept its old settings") || line.contains("does not answer") => {
                Err(BlockError::FailedPrecondition(line.clone()))
            }
            _ => Ok(()),
        }
    }

    /// Applies `loaded` (or reports why it cannot be); answers what changed.
    pub async fn reload(&mut self, loaded: Result<Config, String>) -> Vec<String> {
        let mut next = match loaded {
            Ok(config) => config,
            Err(reason) => {
                warn!(%reason, "The new config is invalid; nothing changed");
                self.status
                    .set_note("config_reload", &format!("the last change was not applied: {reason}"));
                return vec![format!("not applied: {reason}")];
            }
        };
        if let Err(problems) = self.resolve_secrets(&mut next).await {
            let reason = problems.join("; ");
            warn!(%reason, "The new config's secret references do not resolve; nothing changed");
            self.status
                .set_note("config_reload", &format!("the last change was not applied: {reason}"));
            return vec![format!("not applied: {reason}")];
        }
        for specs in next.components.values_mut() {
            for spec in specs {
                spec.advertise = self.advertise.clone();
            }
        }
        let mut report = Vec::new();
        let restart = self.needs_restart(&next);
        if !restart.is_empty() {
            warn!(settings = %restart.join(", "), "Changed settings need a restart to take effect");
            report.push(format!("needs a restart for: {}", restart.join(", ")));
        }
        macro_rules! apply_all {
            ($(($block:ident, $field:ident)),*) => {
                $(
                    if <crate::components::$block as BuildingBlock>::KIND != Kind::Wasm {
                        report.extend(
                            self.apply::<crate::components::$block>(&self.ctx.router.$field, &next).await,
                        );
                    }
                )*
            };
        }
        with_blocks!(apply_all);
        for (kind, specs) in &next.components {
            self.current.components.insert(*kind, specs.clone());
        }
        self.current
            .components
            .retain(|kind, _| next.components.contains_key(kind) || *kind == Kind::Wasm);
        let summary = if report.is_empty() {
            "applied: nothing changed".to_owned()
        } else {
            format!("applied: {}", report.join("; "))
        };
        info!(%summary, "Config reloaded");
        self.status.set_note("config_reload", &summary);
        report
    }

    /// Secret references in the new config, from the secret stores running
    /// now.
    async fn resolve_secrets(&self, config: &mut Config) -> Result<(), Vec<String>> {
        if !secrets::refs::any(config) {
            return Ok(());
        }
        super::resolve_secret_refs(config, &self.ctx.router.secret_stores).await
    }

    /// The sections that changed but cannot change live.
    fn needs_restart(&self, next: &Config) -> Vec<&'static str> {
        let current = &self.current;
        let mut changed = Vec::new();
        if current.server != next.server {
            changed.push("server");
        }
        if current.app != next.app {
            changed.push("app");
        }
        if current.supervisor != next.supervisor {
            changed.push("supervisor");
        }
        if current.log != next.log {
            changed.push("log");
        }
        if current.subscriptions != next.subscriptions {
            changed.push("subscriptions");
        }
        if current.components_of(Kind::Wasm) != next.components_of(Kind::Wasm) {
            changed.push("wasm");
        }
        // A plugin's services are added to the listener's routes once.
        if current.plugins != next.plugins {
            changed.push("plugins");
        }
        changed
    }

    /// Brings block `B`'s components from the current config to `next`'s;
    /// answers one line per change.
    async fn apply<B: BuildingBlock>(&self, blocks: &Blocks<B>, next: &Config) -> Vec<String> {
        let old: BTreeMap<&str, &ComponentSpec> = self
            .current
            .components_of(B::KIND)
            .iter()
            .map(|s| (s.name.as_str(), s))
            .collect();
        let new: BTreeMap<&str, &ComponentSpec> = next
            .components_of(B::KIND)
            .iter()
            .map(|s| (s.name.as_str(), s))
            .collect();
        if old == new {
            return Vec::new();
        }
        let Some(supervisor) = self.supervisor.block::<B>().await else {
            return vec![format!("{}: the supervisor does not answer", B::KIND)];
        };
        let mut report = Vec::new();
        for (name, _) in old.iter().filter(|(name, _)| !new.contains_key(*name)) {
            let key = format!("{}/{name}", B::KIND);
            if let Some(handle) = blocks.remove(name) {
                let slot = handle.slot().clone();
                drain(&slot).await;
                let _ = supervisor.send(RemoveChild((*name).to_owned())).await;
                self.status.unregister(&slot.status);
            }
            info!(component = %key, "Component removed");
            report.push(format!("{key} removed"));
        }
        for (name, spec) in new.iter().filter(|(name, _)| !old.contains_key(*name)) {
            let key = format!("{}/{name}", B::KIND);
            let slot = self.slot::<B>(spec, next);
            let _ = supervisor.send(AddChild(slot.clone())).await;
            blocks.insert(slot);
            info!(component = %key, "Component added");
            report.push(format!("{key} added"));
        }
        for (name, spec) in new.iter() {
            let Some(before) = old.get(name) else { continue };
            if before == spec {
                continue;
            }
            let key = format!("{}/{name}", B::KIND);
            let Ok(handle) = blocks.get("name", name) else { continue };
            let same_shape = before.type_name == spec.type_name && before.queue_capacity == spec.queue_capacity;
            if same_shape {
                let mut rebuilt = (*spec).clone();
                rebuilt.instance_id = self.instance.clone();
                match supervisor.send(ReconfigureChild(Arc::new(rebuilt))).await {
                    Ok(Ok(())) => {
                        info!(component = %key, "Component rebuilt with its new settings");
                        report.push(format!("{key} rebuilt"));
                    }
                    Ok(Err(reason)) => {
                        warn!(component = %key, %reason, "New settings failed; the running instance keeps serving");
                        report.push(format!("{key} kept its old settings: {reason}"));
                    }
                    Err(_) => report.push(format!("{key}: the supervisor does not answer")),
                }
                continue;
            }
            // Another type or queue: a second actor beside the first.
            let old_slot = handle.slot().clone();
            let slot = self.slot::<B>(spec, next);
            let _ = supervisor.send(AddChild(slot.clone())).await;
            let up = wait_up(&slot, &self.status, next.supervisor.init_timeout).await;
            blocks.insert(slot);
            drain(&old_slot).await;
            if let Some(actor) = old_slot.actor() {
                let _ = tokio::time::timeout(DRAIN_LIMIT, actor.send(Shutdown)).await;
            }
            old_slot.set_actor(None);
            self.status.unregister(&old_slot.status);
            if up {
                info!(component = %key, "Component replaced");
                report.push(format!("{key} replaced"));
            } else {
                warn!(component = %key, "Component replaced; the new instance is not UP yet");
                report.push(format!("{key} replaced (not UP yet)"));
            }
        }
        report
    }

    fn slot<B: BuildingBlock>(&self, spec: &ComponentSpec, next: &Config) -> Arc<Slot<B>> {
        slot_for(spec, next.supervisor.queue_capacity, &self.status, &self.instance)
    }
}

/// Waits until the calls admitted to `slot` have finished, or the drain
/// limit passes.
async fn drain<B: BuildingBlock>(slot: &Slot<B>) {
    let deadline = tokio::time::Instant::now() + DRAIN_LIMIT;
    while slot.in_flight() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `slot`'s component is UP; false when `timeout` passes first.
async fn wait_up<B: BuildingBlock>(slot: &Slot<B>, status: &StatusRegistry, timeout: Duration) -> bool {
    let mut changes = status.subscribe();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if slot.status.snapshot().health == Health::Up {
            return true;
        }
        if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
            return false;
        }
    }
}

/// A cheap summary of the watched files' contents, to skip events that
/// changed nothing (a `touch`, an editor's swap file).
fn fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            entries.sort();
            for entry in entries.into_iter().filter(|p| p.is_file()) {
                let content = std::fs::read(&entry).ok();
                out.push((entry, content));
            }
        } else {
            out.push((path.clone(), std::fs::read(path).ok()));
        }
    }
    out
}

/// Watches each path's folder (a file replaced by a rename is a new inode,
/// which a watch on the file itself would miss) and sends a unit for each
/// event touching a watched path.
fn watch_files(paths: &[PathBuf], tx: mpsc::UnboundedSender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    if paths.is_empty() {
        return None;
    }
    let watched: Vec<PathBuf> = paths.iter().map(|p| absolute(p)).collect();
    let targets = watched.clone();
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let relevant = event.paths.iter().any(|changed| {
            targets
                .iter()
                .any(|target| changed == target || changed.parent() == Some(target.as_path()))
        });
        if relevant {
            let _ = tx.send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(e) => {
            warn!(error = %e, "Cannot watch the config for changes; reload with SIGHUP");
            return None;
        }
    };
    for path in &watched {
        let folder = if path.is_dir() {
            path.clone()
        } else {
            path.parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        };
        if let Err(e) = watcher.watch(&folder, notify::RecursiveMode::NonRecursive) {
            warn!(error = %e, folder = %folder.display(), "Cannot watch a config folder; reload with SIGHUP");
        }
    }
    Some(watcher)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
