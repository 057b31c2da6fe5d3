//! The client side of the remote protocol (docs/wire.md): the greeting,
//! then requests and their answers over a [`Transport`].
//!
//! A [`Session`] may be used from several threads: a request and its
//! answer hold the connection for their round trip, requests without an
//! answer (writes, flushes) only for sending. Frames are sealed (encoded
//! and compressed) before the connection is taken, with one codec per
//! concurrent caller, so compressing data does not serialise the workers.
//!
//! Once the connection fails (it dropped, or the server broke the
//! protocol), every later call fails at once with the same explanation.

use std::io::{BufReader, BufWriter, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use poolsync_wire::{
    decode_header, negotiate, Agreed, Codec, Hello, Message, Role, FRAME_HEADER_LEN, HELLO_LEN,
};
use serde::Serialize;

use super::{Transport, TransportControl};
use crate::Error;

/// Buffer of each direction.
const BUFFER: usize = 256 << 10;

/// Bytes and frames a session moved, greetings included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WireStats {
    /// Bytes sent to the server.
    pub bytes_sent: u64,
    /// Bytes received from the server.
    pub bytes_received: u64,
    /// Frames sent.
    pub frames_sent: u64,
    /// Frames received.
    pub frames_received: u64,
}

impl std::ops::AddAssign for WireStats {
    fn add_assign(&mut self, o: Self) {
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.frames_sent += o.frames_sent;
        self.frames_received += o.frames_received;
    }
}

/// One connection to `poolsync serve` (see the module documentation).
pub struct Session {
    node: String,
    command: String,
    agreed: Agreed,
    /// The remote pool set, once opened (for messages).
    set: OnceLock<String>,
    conn: Mutex<Conn>,
    codecs: Mutex<Vec<Codec>>,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("node", &self.node)
            .field("command", &self.command)
            .field("version", &self.agreed.version)
            .finish_non_exhaustive()
    }
}

struct Conn {
    reader: BufReader<Box<dyn Read + Send>>,
    writer: Option<BufWriter<Box<dyn Write + Send>>>,
    control: Box<dyn TransportControl>,
    decoder: Codec,
    /// Why the connection can no longer be used.
    broken: Option<String>,
}

/// Reads until `out` holds `want` bytes or the stream ends.
fn read_up_to(reader: &mut impl Read, out: &mut Vec<u8>, want: usize) -> std::io::Result<()> {
    let mut buf = [0u8; HELLO_LEN];
    while out.len() < want {
        let room = (want - out.len()).min(buf.len());
        let n = match reader.read(&mut buf[..room]) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.extend_from_slice(&buf[..n]);
    }
    Ok(())
}

impl Session {
    /// Greets the server at the other end of `transport` (reached as
    /// `node`) and agrees on a protocol version.
    pub fn start(node: &str, transport: Transport) -> Result<Session, Error> {
        let Transport {
            reader,
            writer,
            mut control,
        } = transport;
        let command = control.command();
        let mut reader = BufReader::with_capacity(BUFFER, reader);
        let mut writer = BufWriter::with_capacity(BUFFER, writer);
        let ours = Hello::ours(Role::Client);
        // A write that fails here (the command already ended) is explained
        // by what the server sent instead of its greeting.
        let _ = writer
            .write_all(&ours.encode())
            .and_then(|()| writer.flush());
        let mut got = Vec::with_capacity(HELLO_LEN);
        let read = read_up_to(&mut reader, &mut got, HELLO_LEN);
        let theirs = match (read, Hello::decode(&got, Role::Server)) {
            (_, Ok(h)) => h,
            (read, Err(poolsync_wire::Error::NotAGreeting { received })) => {
                let complete = received.len() == HELLO_LEN;
                drop(writer);
                let status = if complete {
                    control.abort();
                    None
                } else {
                    control.finish()
                };
                let stderr = control.diagnostics();
                if received.is_empty() {
                    let status = status.or_else(|| read.err().map(|e| e.to_string()));
                    return Err(Error::RemoteNoGreeting {
                        node: node.to_string(),
                        command,
                        status,
                        stderr,
                    });
                }
                return Err(Error::RemoteNoise {
                    node: node.to_string(),
                    command,
                    received: poolsync_wire::quote(&received),
                    stderr,
                });
            }
            (_, Err(source)) => {
                drop(writer);
                control.abort();
                return Err(Error::RemoteProtocol {
                    node: node.to_string(),
                    frame: 0,
                    direction: "(the greeting) from the server",
                    error: source,
                });
            }
        };
        let agreed = match negotiate(&ours, &theirs) {
            Ok(a) => a,
            Err(source) => {
                drop(writer);
                control.abort();
                return Err(Error::RemoteProtocol {
                    node: node.to_string(),
                    frame: 0,
                    direction: "(the greeting) from the server",
                    error: source,
                });
            }
        };
        Ok(Session {
            node: node.to_string(),
            command,
            agreed,
            set: OnceLock::new(),
            conn: Mutex::new(Conn {
                reader,
                writer: Some(writer),
                control,
                decoder: Codec::new(),
                broken: None,
            }),
            codecs: Mutex::new(Vec::new()),
            bytes_sent: AtomicU64::new(HELLO_LEN as u64),
            bytes_received: AtomicU64::new(HELLO_LEN as u64),
            frames_sent: AtomicU64::new(0),
            frames_received: AtomicU64::new(0),
        })
    }

    /// The host, as the pool set file names it.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The transport's command line.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// The protocol version agreed.
    pub fn version(&self) -> u16 {
        self.agreed.version
    }

    /// Names the remote pool set in later messages.
    pub(crate) fn set_name(&self, set: &str) {
        let _ = self.set.set(set.to_string());
    }

    /// What the session moved so far.
    pub fn stats(&self) -> WireStats {
        WireStats {
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            frames_sent: self.frames_sent.load(Ordering::Relaxed),
            frames_received: self.frames_received.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Seals a frame with a codec of the pool (created when every codec is
    /// in use): `seal` gets the codec and the agreed payload limit.
    fn with_codec(
        &self,
        seal: impl FnOnce(&mut Codec, u32) -> Result<Vec<u8>, poolsync_wire::Error>,
    ) -> Result<Vec<u8>, Error> {
        let mut codec = self
            .codecs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_default();
        let sealed = seal(&mut codec, self.agreed.max_payload);
        self.codecs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(codec);
        sealed.map_err(|source| Error::RemoteProtocol {
            node: self.node.clone(),
            frame: self.frames_sent.load(Ordering::Relaxed) + 1,
            direction: "to the server",
            error: source,
        })
    }

    /// Seals `message` into a frame.
    pub(crate) fn seal(&self, message: &Message) -> Result<Vec<u8>, Error> {
        self.with_codec(|codec, max| codec.seal(message, max))
    }

    /// Sends a `write` request of `data` at `offset` (at most
    /// [`poolsync_wire::MAX_DATA`] bytes), sealed without building the
    /// message first.
    pub(crate) fn send_write(&self, offset: u64, data: &[u8]) -> Result<(), Error> {
        let kind = poolsync_wire::message::kind::WRITE;
        let frame = self.with_codec(|codec, max| codec.seal_data(kind, offset, data, max))?;
        self.send_frame(&frame, "write")
    }

    /// Sends a request that has no answer.
    pub fn send(&self, message: &Message) -> Result<(), Error> {
        let frame = self.seal(message)?;
        self.send_frame(&frame, message.name())
    }

    /// Sends a sealed frame of a request that has no answer.
    pub(crate) fn send_frame(&self, frame: &[u8], name: &'static str) -> Result<(), Error> {
        let mut conn = self.lock();
        self.write_locked(&mut conn, frame, name)
    }

    /// Sends a request and returns its answer; a `failed` answer is an
    /// [`Error::RemoteFailed`].
    pub fn request(&self, message: &Message) -> Result<Message, Error> {
        let name = message.name();
        let frame = self.seal(message)?;
        let mut conn = self.lock();
        self.write_locked(&mut conn, &frame, name)?;
        let flushed = match conn.writer.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        };
        if let Err(e) = flushed {
            return Err(self.fail(
                &mut conn,
                format!("sending a {name} request"),
                e.to_string(),
            ));
        }
        match self.read_locked(&mut conn, name)? {
            Message::Failed(f) => Err(Error::RemoteFailed {
                node: self.node.clone(),
                set: self.set.get().cloned().unwrap_or_default(),
                request: name,
                code: f.code,
                message: f.message,
            }),
            answer => Ok(answer),
        }
    }

    /// An answer of the wrong kind: the server broke the protocol.
    pub(crate) fn unexpected(&self, request: &'static str, answer: &Message) -> Error {
        Error::RemoteProtocol {
            node: self.node.clone(),
            frame: self.frames_received.load(Ordering::Relaxed),
            direction: "from the server",
            error: poolsync_wire::Error::Field {
                message: answer.name(),
                field: "kind",
                offset: 0,
                problem: format!("a {} answer to a {request} request", answer.name()),
            },
        }
    }

    fn write_locked(&self, conn: &mut Conn, frame: &[u8], name: &'static str) -> Result<(), Error> {
        if let Some(why) = &conn.broken {
            return Err(self.broken_error(conn, why.clone()));
        }
        let Some(writer) = conn.writer.as_mut() else {
            return Err(self.broken_error(conn, "the session is closed".to_string()));
        };
        match writer.write_all(frame) {
            Ok(()) => {
                self.bytes_sent
                    .fetch_add(frame.len() as u64, Ordering::Relaxed);
                self.frames_sent.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(self.fail(
                conn,
                format!(
                    "sending a {name} request (frame {})",
                    self.frames_sent.load(Ordering::Relaxed) + 1
                ),
                e.to_string(),
            )),
        }
    }

    fn read_locked(&self, conn: &mut Conn, request: &'static str) -> Result<Message, Error> {
        if let Some(why) = &conn.broken {
            return Err(self.broken_error(conn, why.clone()));
        }
        let frame = self.frames_received.load(Ordering::Relaxed) + 1;
        let what = || format!("reading the answer to a {request} request (frame {frame})");
        let mut head = [0u8; FRAME_HEADER_LEN];
        if let Err(e) = conn.reader.read_exact(&mut head) {
            let reason = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                "the connection was closed".to_string()
            } else {
                e.to_string()
            };
            return Err(self.fail(conn, what(), reason));
        }
        let protocol = |source| Error::RemoteProtocol {
            node: self.node.clone(),
            frame,
            direction: "from the server",
            error: source,
        };
        let header = match decode_header(&head, self.agreed.max_payload) {
            Ok(h) => h,
            Err(e) => {
                conn.broken = Some(format!("frame {frame} from the server was refused"));
                conn.control.abort();
                return Err(protocol(e));
            }
        };
        let mut stored = vec![0u8; header.stored_len as usize];
        if let Err(e) = conn.reader.read_exact(&mut stored) {
            return Err(self.fail(conn, what(), e.to_string()));
        }
        self.bytes_received
            .fetch_add((FRAME_HEADER_LEN + stored.len()) as u64, Ordering::Relaxed);
        self.frames_received.fetch_add(1, Ordering::Relaxed);
        match conn.decoder.open(&head, &header, &stored) {
            Ok(m) => Ok(m),
            Err(e) => {
                conn.broken = Some(format!("frame {frame} from the server was refused"));
                conn.control.abort();
                Err(protocol(e))
            }
        }
    }

    /// Marks the connection broken after an I/O failure and explains it,
    /// with what the remote side wrote on its standard error.
    fn fail(&self, conn: &mut Conn, what: String, reason: String) -> Error {
        conn.broken = Some(format!("{what}: {reason}"));
        // The streams are dead; let the command end so that its last words
        // (ssh's "Connection closed", the server's error) can be quoted.
        conn.writer = None;
        let status = conn.control.finish();
        let reason = match status {
            Some(s) => format!("{reason} ({s})"),
            None => reason,
        };
        Error::RemoteConnection {
            node: self.node.clone(),
            what,
            reason,
            stderr: conn.control.diagnostics(),
        }
    }

    fn broken_error(&self, conn: &Conn, why: String) -> Error {
        Error::RemoteConnection {
            node: self.node.clone(),
            what: "earlier".to_string(),
            reason: why,
            stderr: conn.control.diagnostics(),
        }
    }

    /// Ends the session: says goodbye, closes the streams and waits for the
    /// command. Failures here do not matter to the caller, whose work is
    /// durable already; they are returned for messages.
    pub fn close(self) -> Option<String> {
        let bye = self.request(&Message::Close);
        let mut conn = self.lock();
        conn.writer = None;
        let status = conn.control.finish();
        match bye {
            Err(e) => Some(e.to_string()),
            Ok(_) => status,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut conn = self.lock();
        if conn.writer.take().is_some() {
            // The server ends when its input ends, releasing its locks.
            let _ = conn.control.finish();
        }
    }
}
