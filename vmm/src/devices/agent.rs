//! The guest-agent channel: COM2 bridged to a host Unix socket. As with the QEMU driver,
//! the VMM is the socket *server*; one client at a time. Guest-to-host bytes go through a
//! bounded queue so a client that does not read can never block a vCPU (bytes beyond the
//! queue are dropped and counted); host-to-guest bytes enter the UART's receive FIFO as
//! fast as the guest drains it.

use super::Serial;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Guest-to-host bytes queued at most.
const QUEUE_BYTES: usize = 256 << 10;

/// Guest-to-host bytes waiting for the bridge: bounded, and allocated only as it fills
/// (an idle channel costs nothing).
#[derive(Debug, Default)]
pub struct OutQueue {
    /// The bytes, and whether the guest side has gone (the VM ended).
    state: Mutex<(VecDeque<u8>, bool)>,
    ready: Condvar,
}

impl OutQueue {
    /// Queues what fits of `data`; returns how many bytes did not fit.
    fn push(&self, data: &[u8]) -> usize {
        let mut st = lock(&self.state);
        let room = QUEUE_BYTES.saturating_sub(st.0.len()).min(data.len());
        st.0.extend(&data[..room]);
        drop(st);
        if room > 0 {
            self.ready.notify_one();
        }
        data.len() - room
    }

    /// Moves up to `max` queued bytes into `out`, waiting for some; false once the guest
    /// side has gone and nothing is left.
    fn pop(&self, out: &mut Vec<u8>, max: usize) -> bool {
        let mut st = lock(&self.state);
        while st.0.is_empty() {
            if st.1 {
                return false;
            }
            st = self.ready.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        let n = st.0.len().min(max);
        out.extend(st.0.drain(..n));
        true
    }

    fn close(&self) {
        lock(&self.state).1 = true;
        self.ready.notify_all();
    }
}

/// The writer half given to COM2: queues the guest's bytes for the bridge.
#[derive(Debug)]
pub struct AgentSink {
    queue: Arc<OutQueue>,
    dropped: Arc<AtomicU64>,
}

impl Write for AgentSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let lost = self.queue.push(data);
        if lost > 0 {
            self.dropped.fetch_add(lost as u64, Ordering::Relaxed);
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for AgentSink {
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// Setting up the bridge failed.
#[derive(Debug, thiserror::Error)]
#[error("agent socket {path}: {source}")]
pub struct AgentError {
    /// The socket path.
    pub path: PathBuf,
    /// The error.
    pub source: std::io::Error,
}

/// The running bridge; dropping it stops its threads and removes the socket.
#[derive(Debug)]
pub struct AgentBridge {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
}

/// Makes the sink for COM2 and the queue the bridge drains.
pub fn channel() -> (AgentSink, Arc<OutQueue>, Arc<AtomicU64>) {
    let queue = Arc::new(OutQueue::default());
    let dropped = Arc::new(AtomicU64::new(0));
    (
        AgentSink {
            queue: queue.clone(),
            dropped: dropped.clone(),
        },
        queue,
        dropped,
    )
}

impl AgentBridge {
    /// Listens on `path` and bridges clients to `serial` (COM2), reading the guest's
    /// output from `rx`.
    pub fn start(
        path: &Path,
        serial: Arc<Mutex<Serial>>,
        rx: Arc<OutQueue>,
        dropped: Arc<AtomicU64>,
    ) -> Result<Self, AgentError> {
        let err = |source| AgentError {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        let listener = UnixListener::bind(path).map_err(err)?;
        listener.set_nonblocking(true).map_err(err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let client: Arc<Mutex<Option<UnixStream>>> = Arc::new(Mutex::new(None));
        {
            let (stop, client) = (stop.clone(), client.clone());
            std::thread::Builder::new()
                .name("agent-accept".into())
                .spawn(move || accept_loop(listener, serial, client, stop))
                .map_err(err)?;
        }
        {
            let client = client.clone();
            std::thread::Builder::new()
                .name("agent-out".into())
                .spawn(move || writer_loop(rx, client))
                .map_err(err)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            stop,
            dropped,
        })
    }

    /// Guest bytes dropped because no client read them fast enough.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for AgentBridge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::fs::remove_file(&self.path);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(
    listener: UnixListener,
    serial: Arc<Mutex<Serial>>,
    client: Arc<Mutex<Option<UnixStream>>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "agent socket accept failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        tracing::debug!("agent client connected");
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let Ok(writer) = stream.try_clone() else {
            continue;
        };
        *lock(&client) = Some(writer);
        pump_to_guest(stream, &serial, &stop);
        *lock(&client) = None;
        tracing::debug!("agent client disconnected");
    }
}

/// Copies the client's bytes into COM2's receive FIFO until EOF or stop.
fn pump_to_guest(mut stream: UnixStream, serial: &Mutex<Serial>, stop: &AtomicBool) {
    let mut buf = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) {
        let n = match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(_) => return,
        };
        let mut rest = &buf[..n];
        while !rest.is_empty() && !stop.load(Ordering::Relaxed) {
            let taken = {
                let mut s = lock(serial);
                let room = s.fifo_capacity().min(rest.len());
                if room == 0 {
                    0
                } else {
                    s.enqueue_raw_bytes(&rest[..room]).unwrap_or(0)
                }
            };
            rest = &rest[taken..];
            if !rest.is_empty() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// Sends the guest's bytes to the connected client, if any.
fn writer_loop(rx: Arc<OutQueue>, client: Arc<Mutex<Option<UnixStream>>>) {
    let mut batch = Vec::with_capacity(4096);
    loop {
        batch.clear();
        if !rx.pop(&mut batch, 4096) {
            return;
        }
        let stream = lock(&client).as_ref().and_then(|s| s.try_clone().ok());
        if let Some(mut s) = stream {
            if s.write_all(&batch).is_err() {
                tracing::debug!("agent client write failed; bytes dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_out_queue_is_bounded_ordered_and_ends_when_the_guest_side_goes() {
        let (mut sink, queue, dropped) = channel();
        // Nothing is allocated before the guest writes.
        assert_eq!(lock(&queue.state).0.capacity(), 0);
        sink.write_all(b"hello").unwrap();
        let mut out = Vec::new();
        assert!(queue.pop(&mut out, 3));
        assert_eq!(out, b"hel");
        // Past the bound, bytes are dropped and counted, never blocking the writer.
        sink.write_all(&vec![7u8; QUEUE_BYTES + 10]).unwrap();
        assert_eq!(dropped.load(Ordering::Relaxed), 12);
        out.clear();
        assert!(queue.pop(&mut out, usize::MAX));
        assert_eq!(&out[..2], b"lo");
        assert_eq!(out.len(), QUEUE_BYTES);
        // The guest side gone and the queue drained: the bridge's writer ends.
        drop(sink);
        assert!(!queue.pop(&mut out, 1));
    }
}
