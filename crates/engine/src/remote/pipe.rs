//! Both ends of the remote protocol in one process: in-memory pipes and a
//! [`Connector`] that runs [`serve`] on a thread, over
//! any storage (the simulated crash backend in tests).
//!
//! A [`LocalConnector`] can cut its connections after a number of bytes in
//! either direction, so that tests drop the connection at every frame.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use poolsync_pmem::Storage;

use super::serve::{serve, ServeOptions};
use super::{Connector, Transport, TransportControl};
use crate::Error;

/// Bytes a pipe holds before a writer waits.
const PIPE_CAPACITY: usize = 1 << 20;

#[derive(Debug, Default)]
struct PipeState {
    buf: VecDeque<u8>,
    /// The writer is gone: readers see the end once the buffer is empty.
    closed: bool,
    /// The reader is gone: writers fail.
    reader_gone: bool,
    /// Bytes that may still pass before the pipe breaks (a cut connection).
    budget: Option<u64>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<PipeState>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, PipeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The reading end of an in-memory pipe.
#[derive(Debug)]
pub struct PipeReader(Arc<Shared>);

/// The writing end of an in-memory pipe, with what it wrote copied to a
/// tap when it has one (`true`: the client to server direction).
#[derive(Debug)]
pub struct PipeWriter(Arc<Shared>, Option<(Tap, bool)>);

/// An in-memory pipe; with `budget`, it breaks (as a dropped connection
/// does: the reader sees the end, the writer an error) once that many
/// bytes went through.
pub fn pipe(budget: Option<u64>) -> (PipeReader, PipeWriter) {
    let shared = Arc::new(Shared::default());
    shared.lock().budget = budget;
    (PipeReader(Arc::clone(&shared)), PipeWriter(shared, None))
}

/// Every byte that went through the pipes of a connector's connections
/// that tap them, per direction (client to server, server to client).
pub type Tap = Arc<Mutex<(Vec<u8>, Vec<u8>)>>;

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let mut st = self.0.lock();
        loop {
            if !st.buf.is_empty() {
                let n = out.len().min(st.buf.len());
                for (o, b) in out.iter_mut().zip(st.buf.drain(..n)) {
                    *o = b;
                }
                self.0.changed.notify_all();
                return Ok(n);
            }
            if st.closed {
                return Ok(0);
            }
            st = self
                .0
                .changed
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        self.0.lock().reader_gone = true;
        self.0.changed.notify_all();
    }
}

impl Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let broken = || io::Error::new(io::ErrorKind::BrokenPipe, "the connection was cut");
        let mut st = self.0.lock();
        loop {
            if st.reader_gone || st.closed {
                return Err(broken());
            }
            if st.buf.len() < PIPE_CAPACITY {
                break;
            }
            st = self
                .0
                .changed
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let room = PIPE_CAPACITY - st.buf.len();
        let mut n = data.len().min(room);
        if let Some(budget) = st.budget {
            let allowed = usize::try_from(budget).unwrap_or(usize::MAX);
            if allowed == 0 {
                st.closed = true;
                self.0.changed.notify_all();
                return Err(broken());
            }
            n = n.min(allowed);
            st.budget = Some(budget - n as u64);
        }
        let passed = data.get(..n).unwrap_or_default();
        st.buf.extend(passed);
        if let Some((tap, up)) = &self.1 {
            let mut t = tap.lock().unwrap_or_else(PoisonError::into_inner);
            if *up { &mut t.0 } else { &mut t.1 }.extend_from_slice(passed);
        }
        self.0.changed.notify_all();
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.changed.notify_all();
    }
}

/// A [`Connector`] that serves every connection from `storage` on a thread
/// of this process: `poolsync serve` without ssh.
#[derive(Debug, Clone)]
pub struct LocalConnector<S> {
    storage: S,
    options: ServeOptions,
    /// Bytes from the client after which connections break.
    pub cut_requests: Option<u64>,
    /// Bytes from the server after which connections break.
    pub cut_answers: Option<u64>,
    /// Where the bytes of every connection are copied, if anywhere.
    pub tap: Option<Tap>,
}

impl<S> LocalConnector<S> {
    /// Serves from `storage` with `options`, connections never cut.
    pub fn new(storage: S, options: ServeOptions) -> Self {
        LocalConnector {
            storage,
            options,
            cut_requests: None,
            cut_answers: None,
            tap: None,
        }
    }
}

impl<S: Storage + Clone + 'static> Connector for LocalConnector<S> {
    fn connect(&self, node: &str) -> Result<Transport, Error> {
        let (client_reader, mut server_writer) = pipe(self.cut_answers);
        let (server_reader, mut client_writer) = pipe(self.cut_requests);
        if let Some(tap) = &self.tap {
            client_writer.1 = Some((Arc::clone(tap), true));
            server_writer.1 = Some((Arc::clone(tap), false));
        }
        let storage = self.storage.clone();
        let options = self.options.clone();
        let outcome = Arc::new(Mutex::new(String::new()));
        let said = Arc::clone(&outcome);
        let thread = std::thread::Builder::new()
            .name(format!("serve {node}"))
            .spawn(move || {
                let mut input = server_reader;
                let mut output = server_writer;
                if let Err(e) = serve(&storage, &options, &mut input, &mut output) {
                    *said.lock().unwrap_or_else(PoisonError::into_inner) = format!("error: {e}");
                }
            })
            .map_err(|e| Error::RemoteConnect {
                node: node.to_string(),
                command: "serve (in process)".to_string(),
                reason: e.to_string(),
            })?;
        Ok(Transport {
            reader: Box::new(client_reader),
            writer: Box::new(client_writer),
            control: Box::new(ThreadControl {
                node: node.to_string(),
                thread: Some(thread),
                said: outcome,
            }),
        })
    }
}

/// The server thread of a [`LocalConnector`] connection.
struct ThreadControl {
    node: String,
    thread: Option<JoinHandle<()>>,
    said: Arc<Mutex<String>>,
}

impl TransportControl for ThreadControl {
    fn command(&self) -> String {
        format!("poolsync serve for {} (in process)", self.node)
    }

    fn diagnostics(&self) -> String {
        self.said
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn finish(&mut self) -> Option<String> {
        let thread = self.thread.take()?;
        match thread.join() {
            Ok(()) => None,
            Err(_) => Some("the server thread panicked".to_string()),
        }
    }

    fn abort(&mut self) {
        // The thread ends when its input ends, which the session's drop
        // of the writer causes; nothing to kill.
        self.thread = None;
    }
}
