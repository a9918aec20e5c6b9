//! A process's connection to the job's key-value store.

use super::wire::{show_key, FrameReader, FrameWriter, Op, Status};
use super::{DistributedError, Result};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Extra time a reply may take past a request's own timeout before the connection is
/// considered dead.
const REPLY_MARGIN: Duration = Duration::from_secs(30);

/// A client of the store: thread-safe; each request borrows an idle connection (or opens a
/// new one), so blocking gets of several threads proceed side by side.
pub struct StoreClient {
    address: String,
    idle: Mutex<Vec<TcpStream>>,
}

impl std::fmt::Debug for StoreClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreClient")
            .field("address", &self.address)
            .finish()
    }
}

impl StoreClient {
    /// A client of the store at `address` (HOST:PORT); connects on the first request.
    pub fn new(address: &str) -> StoreClient {
        StoreClient {
            address: address.to_string(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The store's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn connection_error(&self, detail: impl std::fmt::Display) -> DistributedError {
        DistributedError::Connection {
            address: self.address.clone(),
            detail: detail.to_string(),
        }
    }

    /// Opens a connection, retrying until `deadline` (process 0 may not listen yet).
    pub(crate) fn connect_until(&self, deadline: Instant) -> Result<TcpStream> {
        let mut last_error = String::from("no address");
        loop {
            let addrs = self
                .address
                .to_socket_addrs()
                .map_err(|e| self.connection_error(format!("cannot resolve it: {e}")))?;
            for addr in addrs {
                match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                    Ok(stream) => {
                        let _ = stream.set_nodelay(true);
                        return Ok(stream);
                    }
                    Err(e) => last_error = e.to_string(),
                }
            }
            if Instant::now() >= deadline {
                return Err(self.connection_error(format!(
                    "cannot connect ({last_error}); is process 0 running and listening there?"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends one request on `stream` and reads its reply.
    pub(crate) fn exchange(
        &self,
        stream: &mut TcpStream,
        request: FrameWriter,
        wait: Duration,
    ) -> Result<(Status, Vec<u8>)> {
        let lost = |e: std::io::Error| {
            self.connection_error(format!(
                "the connection failed ({e}): process 0, which serves the store, has exited \
                 or is unreachable"
            ))
        };
        stream
            .set_read_timeout(Some(wait + REPLY_MARGIN))
            .map_err(lost)?;
        request.send(stream).map_err(lost)?;
        let mut reply = match FrameReader::receive(stream).map_err(lost)? {
            Some(reply) => reply,
            None => {
                return Err(lost(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed by the store",
                )))
            }
        };
        let status = Status::from_byte(reply.tag()).ok_or_else(|| {
            self.connection_error(format!("unknown reply status {}", reply.tag()))
        })?;
        let payload = reply.bytes().map_err(lost)?;
        reply.finish().map_err(lost)?;
        Ok((status, payload))
    }

    fn request(&self, request: FrameWriter, wait: Duration) -> Result<(Status, Vec<u8>)> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut stream = match pooled {
            Some(stream) => stream,
            None => self.connect_until(Instant::now())?,
        };
        let (status, payload) = self.exchange(&mut stream, request, wait)?;
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(stream);
        match status {
            Status::JobFailed => Err(DistributedError::JobFailed(
                String::from_utf8_lossy(&payload).into_owned(),
            )),
            Status::Refused => {
                Err(self
                    .connection_error(format!("refused: {}", String::from_utf8_lossy(&payload))))
            }
            _ => Ok((status, payload)),
        }
    }

    /// Stores `value` under `key` (replacing an earlier value).
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let request = FrameWriter::new(Op::Put as u8).bytes(key).bytes(value);
        self.request(request, Duration::ZERO).map(|_| ())
    }

    /// The value of `key`, waiting up to `timeout` for some process to put it.
    pub fn get(&self, key: &[u8], timeout: Duration) -> Result<Vec<u8>> {
        let timeout_ms = timeout.as_millis() as u64;
        let request = FrameWriter::new(Op::Get as u8).bytes(key).u64(timeout_ms);
        match self.request(request, timeout)? {
            (Status::Ok, value) => Ok(value),
            _ => Err(DistributedError::Timeout {
                what: format!("get {:?}", show_key(key)),
                timeout_ms,
            }),
        }
    }

    /// The value of `key` if some process has put it.
    pub fn try_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let request = FrameWriter::new(Op::TryGet as u8).bytes(key);
        match self.request(request, Duration::ZERO)? {
            (Status::Ok, value) => Ok(Some(value)),
            _ => Ok(None),
        }
    }

    /// Waits until every process of the job has reached barrier `name` (each process
    /// reaches a given name once).
    pub fn barrier(&self, name: &str, process_id: usize, timeout: Duration) -> Result<()> {
        let timeout_ms = timeout.as_millis() as u64;
        let request = FrameWriter::new(Op::Barrier as u8)
            .bytes(name.as_bytes())
            .u64(process_id as u64)
            .u64(timeout_ms);
        match self.request(request, timeout)? {
            (Status::Ok, _) => Ok(()),
            (_, detail) => Err(DistributedError::Timeout {
                what: String::from_utf8_lossy(&detail).into_owned(),
                timeout_ms,
            }),
        }
    }

    /// Reports that this process failed, so that the others stop at once.
    pub fn fail(&self, process_id: usize, message: &str) -> Result<()> {
        let request = FrameWriter::new(Op::Fail as u8)
            .u64(process_id as u64)
            .bytes(message.as_bytes());
        self.request(request, Duration::ZERO).map(|_| ())
    }
}

/// A process's membership in the job: its `Hello` connection and a thread that sends
/// heartbeats on it and reports the job's failure to `on_failure` (once).
pub(crate) struct Membership {
    stream: Arc<Mutex<TcpStream>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    heartbeats: Option<std::thread::JoinHandle<()>>,
    process_id: usize,
}

/// What a process does when the job fails while it runs (called from the heartbeat thread).
pub type FailureHook = Box<dyn Fn(&DistributedError) + Send + Sync>;

impl Membership {
    /// Joins the job as `process_id` of `num_processes`, retrying the connection until
    /// `deadline`, and starts heartbeats every `period`.
    pub(crate) fn join(
        client: &Arc<StoreClient>,
        process_id: usize,
        num_processes: usize,
        deadline: Instant,
        period: Duration,
        on_failure: FailureHook,
    ) -> Result<Membership> {
        let mut stream = client.connect_until(deadline)?;
        let hello = FrameWriter::new(Op::Hello as u8)
            .u64(process_id as u64)
            .u64(num_processes as u64);
        match client.exchange(&mut stream, hello, Duration::ZERO)? {
            (Status::Ok, _) => {}
            (Status::JobFailed, reason) => {
                return Err(DistributedError::JobFailed(
                    String::from_utf8_lossy(&reason).into_owned(),
                ))
            }
            (_, detail) => {
                return Err(client.connection_error(format!(
                    "refused process {process_id}: {}",
                    String::from_utf8_lossy(&detail)
                )))
            }
        }
        let stream = Arc::new(Mutex::new(stream));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (thread_stream, thread_stop, thread_client) =
            (stream.clone(), stop.clone(), client.clone());
        let heartbeats = std::thread::Builder::new()
            .name("vishwam-heartbeat".into())
            .spawn(move || loop {
                std::thread::sleep(period);
                if thread_stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let beat = FrameWriter::new(Op::Heartbeat as u8).u64(process_id as u64);
                let mut stream = thread_stream.lock().unwrap_or_else(|p| p.into_inner());
                if thread_stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let error = match thread_client.exchange(&mut stream, beat, Duration::ZERO) {
                    Ok((Status::Ok, _)) => continue,
                    Ok((_, reason)) => {
                        DistributedError::JobFailed(String::from_utf8_lossy(&reason).into_owned())
                    }
                    Err(e) => e,
                };
                on_failure(&error);
                return;
            })
            .expect("spawn the heartbeat thread");
        Ok(Membership {
            stream,
            stop,
            heartbeats: Some(heartbeats),
            process_id,
        })
    }

    /// Says this process finished cleanly and stops the heartbeats.
    pub(crate) fn done(&mut self, client: &StoreClient) -> Result<()> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let done = FrameWriter::new(Op::Done as u8).u64(self.process_id as u64);
        let mut stream = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        let result = client
            .exchange(&mut stream, done, Duration::ZERO)
            .map(|_| ());
        drop(stream);
        if let Some(t) = self.heartbeats.take() {
            let _ = t.join();
        }
        result
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
