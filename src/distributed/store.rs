//! The key-value store that process 0 serves over TCP (one thread per connection).
//!
//! Semantics, as the PJRT plugins' callbacks need them (`pjrt_c_api.h`,
//! `PJRT_KeyValueGetCallback`): `get` blocks until the key exists or its timeout passes,
//! `try_get` answers at once, `put` stores (a later put of the same key replaces the value).
//! Keys and values are arbitrary bytes. On top: named barriers, and the job's health: each
//! process holds one membership connection (`Hello`) on which it sends heartbeats; when that
//! connection drops before the process said `Done`, or its heartbeats stop for longer than
//! the heartbeat timeout, the job has failed and every waiting or later request of every
//! process answers `JobFailed` with the reason, so no process waits forever on a dead peer.

use super::wire::{show_key, FrameReader, FrameWriter, Op, Status};
use super::{DistributedError, Result};
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the server looks for processes whose heartbeats stopped.
const WATCH_PERIOD: Duration = Duration::from_millis(200);

#[derive(Default, Clone)]
struct Member {
    joined: bool,
    done: bool,
    /// Its membership connection closed (after `Done`, or not).
    left: bool,
    last_heartbeat: Option<Instant>,
}

struct State {
    num_processes: usize,
    heartbeat_timeout: Duration,
    values: HashMap<Vec<u8>, Vec<u8>>,
    barriers: HashMap<Vec<u8>, BTreeSet<u64>>,
    members: Vec<Member>,
    failure: Option<String>,
    stopping: bool,
    connections: Vec<TcpStream>,
}

impl State {
    fn fail(&mut self, reason: String) {
        if self.failure.is_none() {
            tracing::error!("multi-process job failed: {reason}");
            self.failure = Some(reason);
        }
    }

    fn all_done(&self) -> bool {
        self.members.iter().all(|m| m.done)
    }
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `ready` holds, the job fails or the server stops, or `timeout` passes.
    /// Returns the guard and whether `ready` held.
    fn wait_until<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        timeout: Duration,
        ready: impl Fn(&State) -> bool,
    ) -> (MutexGuard<'a, State>, bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if ready(&state) {
                return (state, true);
            }
            if state.failure.is_some() || state.stopping {
                return (state, false);
            }
            let now = Instant::now();
            if now >= deadline {
                return (state, false);
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// The store served by process 0; stops (closing every connection) when dropped.
pub struct StoreServer {
    address: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for StoreServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreServer")
            .field("address", &self.address)
            .finish()
    }
}

impl StoreServer {
    /// Listens on `bind` (port 0 picks a free port) for a job of `num_processes` processes.
    pub fn start(
        bind: &str,
        num_processes: usize,
        heartbeat_timeout: Duration,
    ) -> Result<StoreServer> {
        let listener = TcpListener::bind(bind).map_err(|e| DistributedError::Connection {
            address: bind.to_string(),
            detail: format!("process 0 cannot listen there: {e}"),
        })?;
        let address = listener
            .local_addr()
            .map_err(|e| DistributedError::Connection {
                address: bind.to_string(),
                detail: e.to_string(),
            })?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                num_processes,
                heartbeat_timeout,
                values: HashMap::new(),
                barriers: HashMap::new(),
                members: vec![Member::default(); num_processes],
                failure: None,
                stopping: false,
                connections: Vec::new(),
            }),
            changed: Condvar::new(),
        });
        let accept_shared = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("vishwam-store-accept".into())
            .spawn(move || accept_loop(listener, accept_shared))
            .expect("spawn the store's accept thread");
        let watch_shared = shared.clone();
        let watcher = std::thread::Builder::new()
            .name("vishwam-store-watch".into())
            .spawn(move || watch_heartbeats(watch_shared))
            .expect("spawn the store's heartbeat watcher");
        Ok(StoreServer {
            address,
            shared,
            threads: vec![acceptor, watcher],
        })
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Waits until every process has said it is done (then the server may stop), the job
    /// fails, or `timeout` passes.
    pub fn wait_all_done(&self, timeout: Duration) -> Result<()> {
        let state = self.shared.lock();
        let (state, done) = self.shared.wait_until(state, timeout, State::all_done);
        if done {
            return Ok(());
        }
        if let Some(reason) = &state.failure {
            return Err(DistributedError::JobFailed(reason.clone()));
        }
        let waiting: Vec<usize> = (0..state.num_processes)
            .filter(|&r| !state.members[r].done)
            .collect();
        Err(DistributedError::Timeout {
            what: format!("waiting for processes {waiting:?} to finish"),
            timeout_ms: timeout.as_millis() as u64,
        })
    }

    /// Waits until every other process that joined has left (its membership connection
    /// closed) or `timeout` passes: after a failure, so that they learn the reason from the
    /// store before it goes away.
    pub fn wait_others_left(&self, me: usize, timeout: Duration) {
        let state = self.shared.lock();
        let deadline = Instant::now() + timeout;
        let gone = |s: &State| {
            s.members
                .iter()
                .enumerate()
                .all(|(r, m)| r == me || !m.joined || m.left)
        };
        let mut state = state;
        while !gone(&state) && Instant::now() < deadline {
            state = self
                .shared
                .changed
                .wait_timeout(state, WATCH_PERIOD)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Stops serving: closes every connection and joins the server's threads.
    pub fn stop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.stopping = true;
            for c in state.connections.drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
        self.shared.changed.notify_all();
        // Wake the acceptor, blocked in accept().
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for StoreServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.lock().stopping {
            return;
        }
        let Ok(stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        if let Ok(clone) = stream.try_clone() {
            shared.lock().connections.push(clone);
        }
        let conn_shared = shared.clone();
        let _ = std::thread::Builder::new()
            .name("vishwam-store-conn".into())
            .spawn(move || serve_connection(stream, conn_shared));
    }
}

fn watch_heartbeats(shared: Arc<Shared>) {
    loop {
        std::thread::sleep(WATCH_PERIOD);
        let mut state = shared.lock();
        if state.stopping {
            return;
        }
        let limit = state.heartbeat_timeout;
        let silent = state
            .members
            .iter()
            .enumerate()
            .find(|(_, m)| !m.done && m.last_heartbeat.is_some_and(|t| t.elapsed() > limit));
        if let Some((r, _)) = silent {
            state.fail(format!(
                "process {r} sent no heartbeat for {:.1} s (hung, or its host is unreachable)",
                limit.as_secs_f64()
            ));
            drop(state);
            shared.changed.notify_all();
        }
    }
}

/// Serves one connection until it closes. A membership connection (`Hello`) that closes
/// before its process said `Done` fails the job.
fn serve_connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut member: Option<usize> = None;
    while let Ok(Some(frame)) = FrameReader::receive(&mut stream) {
        let reply = match handle(frame, &shared, &mut member) {
            Ok(reply) => reply,
            Err(e) => FrameWriter::new(Status::Refused as u8).bytes(e.to_string().as_bytes()),
        };
        if reply.send(&mut stream).is_err() {
            break;
        }
    }
    if let Some(r) = member {
        let mut state = shared.lock();
        state.members[r].left = true;
        if !state.members[r].done && !state.stopping {
            state.fail(format!(
                "process {r} lost its connection to the store before it finished \
                 (killed, crashed, or its host went away)"
            ));
        }
        drop(state);
        shared.changed.notify_all();
    }
}

fn ok(payload: &[u8]) -> FrameWriter {
    FrameWriter::new(Status::Ok as u8).bytes(payload)
}

fn failed(state: &State) -> Option<FrameWriter> {
    state
        .failure
        .as_ref()
        .map(|reason| FrameWriter::new(Status::JobFailed as u8).bytes(reason.as_bytes()))
}

fn refused(message: String) -> io::Result<FrameWriter> {
    Ok(FrameWriter::new(Status::Refused as u8).bytes(message.as_bytes()))
}

fn check_process(state: &State, process_id: u64) -> std::result::Result<usize, String> {
    match (process_id as usize) < state.num_processes {
        true => Ok(process_id as usize),
        false => Err(format!(
            "process id {process_id} is outside 0..{} (--num-processes {})",
            state.num_processes, state.num_processes
        )),
    }
}

fn handle(
    mut frame: FrameReader,
    shared: &Shared,
    member: &mut Option<usize>,
) -> io::Result<FrameWriter> {
    let Some(op) = Op::from_byte(frame.tag()) else {
        return refused(format!("unknown store operation {}", frame.tag()));
    };
    let reply = match op {
        Op::Hello => {
            let (process_id, num_processes) = (frame.u64()?, frame.u64()?);
            frame.finish()?;
            let mut state = shared.lock();
            if num_processes as usize != state.num_processes {
                return refused(format!(
                    "process {process_id} says the job has {num_processes} processes, \
                     process 0 says {}",
                    state.num_processes
                ));
            }
            let r = match check_process(&state, process_id) {
                Ok(r) => r,
                Err(e) => return refused(e),
            };
            if state.members[r].joined {
                return refused(format!(
                    "two processes claim process id {r} (check --process-id / RANK)"
                ));
            }
            state.members[r] = Member {
                joined: true,
                done: false,
                left: false,
                last_heartbeat: Some(Instant::now()),
            };
            *member = Some(r);
            failed(&state).unwrap_or_else(|| ok(b""))
        }
        Op::Put => {
            let (key, value) = (frame.bytes()?, frame.bytes()?);
            frame.finish()?;
            let mut state = shared.lock();
            if let Some(reply) = failed(&state) {
                return Ok(reply);
            }
            state.values.insert(key, value);
            drop(state);
            shared.changed.notify_all();
            ok(b"")
        }
        Op::Get => {
            let (key, timeout_ms) = (frame.bytes()?, frame.u64()?);
            frame.finish()?;
            let state = shared.lock();
            let timeout = Duration::from_millis(timeout_ms);
            let (state, found) = shared.wait_until(state, timeout, |s| s.values.contains_key(&key));
            match (found, failed(&state)) {
                (true, _) => ok(&state.values[&key]),
                (false, Some(reply)) => reply,
                (false, None) => FrameWriter::new(Status::Timeout as u8)
                    .bytes(format!("get {:?}", show_key(&key)).as_bytes()),
            }
        }
        Op::TryGet => {
            let key = frame.bytes()?;
            frame.finish()?;
            let state = shared.lock();
            if let Some(reply) = failed(&state) {
                return Ok(reply);
            }
            match state.values.get(&key) {
                Some(value) => ok(value),
                None => FrameWriter::new(Status::NotFound as u8).bytes(b""),
            }
        }
        Op::Barrier => {
            let (name, process_id, timeout_ms) = (frame.bytes()?, frame.u64()?, frame.u64()?);
            frame.finish()?;
            let mut state = shared.lock();
            if let Err(e) = check_process(&state, process_id) {
                return refused(e);
            }
            let n = state.num_processes;
            let arrived = state.barriers.entry(name.clone()).or_default();
            if !arrived.insert(process_id) {
                return refused(format!(
                    "process {process_id} reached barrier {:?} twice",
                    show_key(&name)
                ));
            }
            drop(state);
            shared.changed.notify_all();
            let state = shared.lock();
            let timeout = Duration::from_millis(timeout_ms);
            let (state, complete) =
                shared.wait_until(state, timeout, |s| s.barriers[&name].len() == n);
            match (complete, failed(&state)) {
                (true, _) => ok(b""),
                (false, Some(reply)) => reply,
                (false, None) => {
                    let missing: Vec<usize> = (0..n as u64)
                        .filter(|r| !state.barriers[&name].contains(r))
                        .map(|r| r as usize)
                        .collect();
                    FrameWriter::new(Status::Timeout as u8).bytes(
                        format!(
                            "barrier {:?} (processes {missing:?} never reached it)",
                            show_key(&name)
                        )
                        .as_bytes(),
                    )
                }
            }
        }
        Op::Heartbeat => {
            let process_id = frame.u64()?;
            frame.finish()?;
            let mut state = shared.lock();
            let r = match check_process(&state, process_id) {
                Ok(r) => r,
                Err(e) => return refused(e),
            };
            state.members[r].last_heartbeat = Some(Instant::now());
            failed(&state).unwrap_or_else(|| ok(b""))
        }
        Op::Fail => {
            let (process_id, message) = (frame.u64()?, frame.bytes()?);
            frame.finish()?;
            let mut state = shared.lock();
            state.fail(format!(
                "process {process_id} failed: {}",
                String::from_utf8_lossy(&message)
            ));
            drop(state);
            shared.changed.notify_all();
            ok(b"")
        }
        Op::Done => {
            let process_id = frame.u64()?;
            frame.finish()?;
            let mut state = shared.lock();
            let r = match check_process(&state, process_id) {
                Ok(r) => r,
                Err(e) => return refused(e),
            };
            state.members[r].done = true;
            drop(state);
            shared.changed.notify_all();
            ok(b"")
        }
    };
    Ok(reply)
}
