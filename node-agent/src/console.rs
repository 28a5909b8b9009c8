//! A guest's serial console as the node serves it: one connection to the hypervisor's
//! console socket, the recent output, any number of viewers and at most one writer.
//!
//! Memory stays bounded whatever the guest prints: the history is [`HISTORY_BYTES`], each
//! viewer's queue [`QUEUE_CHUNKS`] chunks of at most [`CHUNK_BYTES`]. A viewer too slow for
//! the guest loses output (and is told how much, once it catches up) rather than holding
//! the guest or growing the node.

use bytes::Bytes;
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;

/// Console output kept for a new session (and `tail`), in bytes.
pub const HISTORY_BYTES: usize = 64 * 1024;
/// Largest chunk handed to a viewer.
pub const CHUNK_BYTES: usize = 16 * 1024;
/// Chunks a viewer may have queued before it loses output.
pub const QUEUE_CHUNKS: usize = 64;
/// Input the writer may have queued before more is refused.
const INPUT_QUEUE: usize = 64;

/// Attaching to a console failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// Another session holds the writer role.
    #[error("another session is writing to this console; attach read-only or retry later")]
    WriterTaken,
    /// The hub is gone (the guest stopped).
    #[error("the console is closed")]
    Closed,
}

struct Viewer {
    id: u64,
    tx: mpsc::Sender<Bytes>,
    /// Bytes this viewer lost since its queue last had room.
    dropped: u64,
}

impl Viewer {
    /// Queues the notice of what this viewer lost, if it lost anything and its queue has
    /// room; `false` once the viewer is gone.
    fn offer_notice(&mut self) -> bool {
        if self.dropped == 0 {
            return true;
        }
        let notice = format!(
            "\r\n[modvisor: {} bytes of console output dropped: this session read too slowly]\r\n",
            self.dropped
        );
        match self.tx.try_send(Bytes::from(notice)) {
            Ok(()) => {
                self.dropped = 0;
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

#[derive(Default)]
struct State {
    history: VecDeque<u8>,
    viewers: Vec<Viewer>,
    writer: Option<u64>,
    next_id: u64,
    /// Input for the guest, taken by the connection thread.
    input: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
}

struct Inner {
    socket: PathBuf,
    state: Mutex<State>,
    stop: AtomicBool,
}

fn lock(inner: &Inner) -> MutexGuard<'_, State> {
    // The state is a queue, lists and counters: consistent at every await-free step, so
    // a panic elsewhere leaves nothing half-done here.
    inner.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// One guest's console. Dropping it disconnects every session.
pub struct ConsoleHub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ConsoleHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConsoleHub({})", self.inner.socket.display())
    }
}

impl Drop for ConsoleHub {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        let mut s = lock(&self.inner);
        s.viewers.clear();
        s.input = None;
    }
}

/// A session on a console: the history when it attached, then the output as it comes.
pub struct Session {
    /// The output before this session attached (up to [`HISTORY_BYTES`]).
    pub history: Vec<u8>,
    /// The output from then on; ends when the hub closes.
    pub output: mpsc::Receiver<Bytes>,
    id: u64,
    writer: bool,
    inner: Arc<Inner>,
}

impl Session {
    /// The next chunk of output; `None` once the hub closes. Reading makes room in this
    /// session's queue, so the notice of output dropped while it was full is queued at
    /// once, not only when the guest writes again.
    pub async fn next_output(&mut self) -> Option<Bytes> {
        let chunk = self.output.recv().await?;
        let mut s = lock(&self.inner);
        if let Some(v) = s.viewers.iter_mut().find(|v| v.id == self.id) {
            // A viewer whose queue closed is removed by the next publish.
            v.offer_notice();
        }
        Some(chunk)
    }

    /// Whether this session holds the writer role.
    pub fn is_writer(&self) -> bool {
        self.writer
    }

    /// Sends keystrokes to the guest (writer sessions only). `false` when the input could
    /// not be queued (the console is closed or the guest is not reading).
    pub fn send(&self, bytes: &[u8]) -> bool {
        if !self.writer {
            return false;
        }
        let input = lock(&self.inner).input.clone();
        input.is_some_and(|tx| tx.try_send(bytes.to_vec()).is_ok())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut s = lock(&self.inner);
        s.viewers.retain(|v| v.id != self.id);
        if s.writer == Some(self.id) {
            s.writer = None;
        }
    }
}

impl ConsoleHub {
    /// A hub of the console served on `socket`; its thread connects (and reconnects) until
    /// the hub is dropped.
    pub fn start(socket: PathBuf) -> std::io::Result<Self> {
        let inner = Arc::new(Inner {
            socket,
            state: Mutex::new(State::default()),
            stop: AtomicBool::new(false),
        });
        let for_thread = inner.clone();
        std::thread::Builder::new()
            .name("console".into())
            .spawn(move || run(&for_thread))?;
        Ok(ConsoleHub { inner })
    }

    /// Attaches a session; `writer` asks for the writer role (one at a time).
    pub fn attach(&self, writer: bool) -> Result<Session, AttachError> {
        if self.inner.stop.load(Ordering::SeqCst) {
            return Err(AttachError::Closed);
        }
        let mut s = lock(&self.inner);
        if writer && s.writer.is_some() {
            return Err(AttachError::WriterTaken);
        }
        s.next_id += 1;
        let id = s.next_id;
        if writer {
            s.writer = Some(id);
        }
        let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
        s.viewers.push(Viewer { id, tx, dropped: 0 });
        Ok(Session {
            history: s.history.iter().copied().collect(),
            output: rx,
            id,
            writer,
            inner: self.inner.clone(),
        })
    }

    /// The last `n` bytes of output the hub has seen (at most [`HISTORY_BYTES`]).
    pub fn tail(&self, n: usize) -> Vec<u8> {
        let s = lock(&self.inner);
        let skip = s.history.len().saturating_sub(n);
        s.history.iter().skip(skip).copied().collect()
    }

    /// Sessions attached now.
    pub fn sessions(&self) -> usize {
        lock(&self.inner).viewers.len()
    }
}

/// Hands `chunk` of output to the history and every viewer.
fn publish(inner: &Inner, chunk: &[u8]) {
    let mut s = lock(inner);
    s.history.extend(chunk);
    let excess = s.history.len().saturating_sub(HISTORY_BYTES);
    s.history.drain(..excess);
    let bytes = Bytes::copy_from_slice(chunk);
    s.viewers.retain_mut(|v| {
        if !v.offer_notice() {
            return false;
        }
        if v.dropped > 0 {
            v.dropped += chunk.len() as u64;
            return true;
        }
        match v.tx.try_send(bytes.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                v.dropped += chunk.len() as u64;
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    });
}

/// Connects to the console socket, relays both ways, reconnects after a break; ends when
/// the hub is dropped.
fn run(inner: &Inner) {
    while !inner.stop.load(Ordering::SeqCst) {
        let stream = match crate::guest_files::connect_socket(&inner.socket) {
            Ok(s) => s,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        if let Err(e) = relay(inner, stream) {
            tracing::debug!(socket = %inner.socket.display(), error = %e, "console connection ended");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn relay(inner: &Inner, stream: UnixStream) -> std::io::Result<()> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(INPUT_QUEUE);
    lock(inner).input = Some(tx);
    let mut writer = stream.try_clone()?;
    writer.set_write_timeout(Some(Duration::from_secs(5)))?;
    let input = std::thread::Builder::new()
        .name("console-input".into())
        .spawn(move || {
            for bytes in rx {
                if writer.write_all(&bytes).is_err() {
                    return;
                }
            }
        })?;
    let mut reader = stream;
    // Wakes now and then to notice a dropped hub.
    reader.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut buf = vec![0u8; CHUNK_BYTES];
    let ended = loop {
        if inner.stop.load(Ordering::SeqCst) {
            break Ok(());
        }
        match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => publish(inner, &buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    // Ends the input thread (its channel closes), then lets it go.
    lock(inner).input = None;
    if input.join().is_err() {
        tracing::warn!("the console input thread panicked");
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[tokio::test]
    async fn history_viewers_one_writer_and_bounded_queues() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let hub = ConsoleHub::start(path).unwrap();
        let (mut guest, _) = listener.accept().unwrap();
        guest.write_all(b"boot line\n").unwrap();
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while hub.tail(100).is_empty() && std::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(hub.tail(100), b"boot line\n");

        let mut writer = hub.attach(true).unwrap();
        assert_eq!(writer.history, b"boot line\n");
        assert_eq!(hub.attach(true).err(), Some(AttachError::WriterTaken));
        let viewer = hub.attach(false).unwrap();
        assert!(!viewer.send(b"ignored"), "a viewer cannot type");
        assert!(writer.send(b"echo hi\n"));
        let mut got = [0u8; 8];
        guest.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"echo hi\n");
        guest.write_all(b"hi\n").unwrap();
        assert_eq!(&writer.output.recv().await.unwrap()[..], b"hi\n");

        // A viewer that never reads: its queue stays bounded, the hub keeps going, and
        // it is told what it lost once it reads again.
        for _ in 0..(QUEUE_CHUNKS * 4) {
            guest.write_all(&[b'x'; 4096]).unwrap();
        }
        guest.write_all(b"END").unwrap();
        // The hub has read it all once its history ends with END (the writer, which
        // read nothing meanwhile, may have lost some of it too).
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while hub.tail(3) != b"END" && std::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(hub.tail(3), b"END");
        drop(writer);
        let again = hub.attach(true).unwrap();
        assert!(
            again.is_writer(),
            "the writer role is free once its session ends"
        );
        // The guest says nothing more: reading alone brings the notice, after what was queued.
        let mut slow = viewer;
        let mut queued = 0;
        loop {
            let chunk = tokio::time::timeout(Duration::from_secs(10), slow.next_output())
                .await
                .expect("the notice, without new output")
                .unwrap();
            if String::from_utf8_lossy(&chunk).contains("bytes of console output dropped") {
                break;
            }
            queued += 1;
            assert!(chunk.len() <= CHUNK_BYTES);
            assert!(queued <= QUEUE_CHUNKS, "{queued}");
        }
        guest.write_all(b"more").unwrap();
        assert_eq!(&slow.next_output().await.unwrap()[..], b"more");
        assert_eq!(hub.tail(3), b"ore");
        assert!(hub.tail(usize::MAX).len() <= HISTORY_BYTES);
    }
}
