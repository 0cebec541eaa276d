//! One tokio task per connection: it moves bytes between the transport and the core's
//! [`Connection`], sleeps until the connection's deadline, and wakes when the core has
//! something for it. Every decision is the core's; this is the I/O and the waiting. The
//! transport is any byte stream ([`Transport`]): a TCP socket from the listener, or whatever
//! [`crate::BrokerHandle::serve`] is given.
//!
//! A client that does not read never stalls the task: its output waits in the write buffer
//! while the task goes on, and deliveries pile up in the session's bounded queue (and are
//! dropped and counted past its limits).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::core::{Connection, Core};
use crate::listener::Admission;
use crate::store::JournalError;

/// Bytes gathered into one write before it is handed to the writer.
const MAX_WRITE: usize = 256 * 1024;
/// Read buffer headroom per read.
const READ_CHUNK: usize = 8 * 1024;

/// A connection's byte stream: a TCP socket, or anything else that reads and writes bytes in
/// order (TLS, WebSocket, an in-memory pipe).
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for T {}

/// The driver's clock: tokio's, so that a test on a paused clock pauses the broker too.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// What woke the connection's task; any number of these at once.
#[derive(Default)]
struct Woken {
    /// Bytes read into the read buffer.
    received: usize,
    /// Bytes the transport took.
    sent: usize,
    /// The peer closed its side.
    eof: bool,
    core: bool,
    timer: bool,
    /// Work is waiting in the connection itself (deliveries past a batch).
    again: bool,
    failed: bool,
}

/// A connection's input and output buffers, allocated only while they hold bytes.
#[derive(Default)]
struct Buffers {
    read: BytesMut,
    write: BytesMut,
    /// The transport took every byte written but has not finished flushing them (a TLS or
    /// WebSocket stream holding the tail of what it took): flushed again as soon as it can go
    /// on, even if nothing more is written.
    unflushed: bool,
    /// Output that waits for the journal: each mark is a journal ticket and where, in
    /// `write`, the bytes that wait for it end. Bytes before the first mark may go.
    held: VecDeque<(u64, usize)>,
    /// Bytes at the front of `write` that wait for nothing.
    free: usize,
}

impl Buffers {
    /// Frees the memory of a buffer that holds nothing. True when both are empty, so that the
    /// whole box can go.
    fn release_empty(&mut self) -> bool {
        for buf in [&mut self.read, &mut self.write] {
            if buf.is_empty() && buf.capacity() > 0 {
                *buf = BytesMut::new();
            }
        }
        self.read.is_empty() && self.write.is_empty() && !self.unflushed
    }

    /// Marks the output added since the last call as waiting for `ticket` (the
    /// connection's [`Connection::output_ticket`]), unless it need not wait.
    fn hold(&mut self, ticket: u64, connection: &Connection) {
        let end = self.write.len();
        match self.held.back_mut() {
            Some((t, e)) if *t == ticket => *e = end,
            Some(_) => self.held.push_back((ticket, end)),
            None if ticket == 0 || connection.is_durable(ticket) => self.free = end,
            None => self.held.push_back((ticket, end)),
        }
    }

    /// How many bytes at the front of `write` may go: those whose tickets are durable.
    /// Registers `cx` for the first ticket that is not. Err: the journal failed, and the
    /// held bytes must never be sent.
    fn sendable(
        &mut self,
        connection: &Connection,
        cx: &mut Context<'_>,
    ) -> Result<usize, JournalError> {
        while let Some(&(ticket, end)) = self.held.front() {
            match connection.poll_durable(ticket, cx) {
                Poll::Ready(Ok(())) => {
                    self.held.pop_front();
                    self.free = self.free.max(end);
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(self.free),
            }
        }
        self.free = self.write.len();
        Ok(self.free)
    }

    /// Takes `n` sent bytes off the front.
    fn sent(&mut self, n: usize) {
        self.free = self.free.saturating_sub(n);
        for (_, end) in &mut self.held {
            *end = end.saturating_sub(n);
        }
    }
}

/// Where a connection came from, beyond its address.
#[derive(Debug, Default)]
pub(crate) struct Origin {
    /// The listener's index in the configuration.
    pub(crate) listener: usize,
    /// The client is on this machine though its address does not say so (a Unix socket).
    pub(crate) local: bool,
    /// The user name the client's certificate gave it (`use_identity_as_username`).
    pub(crate) certificate_username: Option<String>,
    /// The broker's own connection (a bridge's local end): trusted.
    pub(crate) internal: bool,
}

/// Runs one connection to its end; the returned future ends when the transport is closed,
/// and drops `done` then.
///
/// The task of an idle connection is most of its memory, so the future is kept small: the
/// waits are polled by hand (the transport and the connection keep their wakers themselves,
/// with no waiter stored in the task), and both buffers live in one box that exists only while
/// either holds bytes. An idle connection's read is polled into a buffer on the stack.
///
/// `accepted_at` is when the transport was accepted: the CONNECT is due within
/// `limits.connect_timeout_ms` of it, handshakes included. `origin` says where the client
/// came from.
pub(crate) fn run<S: Transport>(
    core: Arc<Core>,
    stream: S,
    peer: SocketAddr,
    accepted_at: Instant,
    origin: Origin,
    done: Admission,
) -> impl Future<Output = ()> + Send {
    let mut connection = Connection::new(&core, peer, accepted_at);
    connection.set_listener(origin.listener, origin.local);
    if let Some(name) = origin.certificate_username {
        connection.set_certificate_username(&name);
    }
    if origin.internal {
        connection.set_internal();
    }
    drop(core);
    async move {
        let mut stream = stream;
        let unsent = drive(&mut connection, &mut stream).await;
        let close_timeout = connection.core().live.close_timeout();
        let _ = tokio::time::timeout(
            close_timeout,
            Box::pin(close(&mut connection, stream, unsent)),
        )
        .await;
        drop(connection);
        drop(done);
    }
}

/// Runs a connection on its own task; see [`run`].
pub(crate) fn spawn<S: Transport>(
    core: &Arc<Core>,
    stream: S,
    peer: SocketAddr,
    accepted_at: Instant,
    origin: Origin,
    done: Admission,
) {
    // Boxed: a task stores its future inline in a cache-line-aligned cell, which rounds every
    // idle connection's task up to a multiple of 128 bytes; boxing keeps the cell at 128 bytes
    // and the future at its exact size.
    tokio::spawn(Box::pin(run(
        core.clone(),
        stream,
        peer,
        accepted_at,
        origin,
        done,
    )));
}

/// Serves the connection until it is closed. Returns output the transport did not take yet.
async fn drive<S: Transport>(connection: &mut Connection, stream: &mut S) -> BytesMut {
    let mut io: Option<Box<Buffers>> = None;
    let sleep = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(sleep);
    // Whether `sleep` runs to the connection's next deadline (its own deadline says which).
    let mut armed = false;
    // The transport failed or ended: it is not touched again (a TLS or WebSocket stream fails
    // every flush of what it could not send), while the connection may still wait for room
    // for what it read before (QoS 0 messages read with a DISCONNECT).
    let mut transport_gone = false;

    loop {
        let bufs = io.get_or_insert_with(Box::default);
        // Input that waited (for more bytes, or for the connection to want it again).
        if !bufs.read.is_empty() && connection.wants_input() {
            connection.handle_input(now(), &mut bufs.read);
        }
        // Transmit: as many packets as fit into the write buffer, then one write for them all.
        let at = now();
        while bufs.write.len() < MAX_WRITE && connection.poll_transmit(at, &mut bufs.write) {}
        bufs.hold(connection.output_ticket(), connection);
        // Stopped by the buffer's limit, not for lack of output: more may be queued.
        let more_queued = bufs.write.len() >= MAX_WRITE;
        // A peer that does not read its output is not read from either, once a full buffer of
        // output waits for it; nor while the connection waits.
        let can_read = bufs.write.len() < MAX_WRITE && connection.wants_input();
        if connection.is_closed() {
            break;
        }
        // Work that nothing else will wake this task for: deliveries past a batch, or output
        // queued past a full buffer. It goes on at once once the write buffer has room for it,
        // through tokio's budget so that a long inbox does not keep other tasks from running.
        let more_work = connection.has_work();
        match connection.poll_timeout() {
            Some(at) if !armed || sleep.deadline() != at.into() => {
                sleep.as_mut().reset(at.into());
                armed = true;
            }
            Some(_) => {}
            None => armed = false,
        }
        // Captured by value where it can be: this closure is part of the task's state.
        let timer_armed = armed;
        let gone = transport_gone;
        let mut timer = sleep.as_mut();
        let conn = &mut *connection;
        let transport = &mut *stream;
        let buffers = &mut io;
        let woken = std::future::poll_fn(move |cx| {
            let mut woken = Woken::default();
            let bufs = buffers.get_or_insert_with(Box::default);
            if !gone && (!bufs.write.is_empty() || bufs.unflushed) {
                // Only what the journal has made durable goes (a PUBACK once its message
                // is kept); the rest waits, and the journal wakes us.
                match bufs.sendable(conn, cx) {
                    Err(_) => woken.failed = true,
                    Ok(0) if !bufs.unflushed => {}
                    Ok(limit) => {
                        let before = woken.sent;
                        let written = poll_write_front(
                            transport,
                            cx,
                            &mut bufs.write,
                            limit,
                            &mut woken.sent,
                        );
                        bufs.sent(woken.sent - before);
                        // Counted as it is written: a poll that only writes returns Pending,
                        // and takes `woken` with it.
                        conn.core().counters.per_thread.written(woken.sent - before);
                        match written {
                            Poll::Ready(Ok(())) => bufs.unflushed = false,
                            Poll::Ready(Err(_)) => woken.failed = true,
                            Poll::Pending => bufs.unflushed = true,
                        }
                    }
                }
            }
            if can_read && !gone && !woken.failed {
                match poll_read_some(transport, cx, &mut bufs.read) {
                    Poll::Ready(Ok(0)) => woken.eof = true,
                    Poll::Ready(Ok(n)) => woken.received = n,
                    Poll::Ready(Err(_)) => woken.failed = true,
                    Poll::Pending => {}
                }
            }
            let again = (more_work && bufs.write.len() < MAX_WRITE)
                || (more_queued && bufs.write.is_empty());
            // A connection whose buffers are empty keeps none.
            if bufs.release_empty() {
                *buffers = None;
            }
            woken.core = conn.poll_wakeup(cx).is_ready();
            if again {
                if let Poll::Ready(progress) = tokio::task::coop::poll_proceed(cx) {
                    progress.made_progress();
                    woken.again = true;
                }
            }
            woken.timer = timer_armed && timer.as_mut().poll(cx).is_ready();
            // Written output alone is no reason to go round: the loop goes round when the
            // connection has more to say, which `again` and the wakeups tell.
            let any = woken.received > 0 || woken.eof || woken.core || woken.timer || woken.again;
            if any || woken.failed {
                Poll::Ready(woken)
            } else {
                Poll::Pending
            }
        })
        .await;
        connection.core().counters.per_thread.read(woken.received);
        if woken.failed || woken.eof {
            // The peer is gone: what it did not take is dropped with the connection.
            if let Some(bufs) = io.as_mut() {
                bufs.write = BytesMut::new();
                bufs.held = VecDeque::new();
                bufs.free = 0;
                bufs.unflushed = false;
            }
            transport_gone = true;
            connection.connection_lost(now());
            continue;
        }
        if woken.received > 0 {
            if let Some(bufs) = io.as_mut() {
                connection.handle_input(now(), &mut bufs.read);
            }
        }
        if woken.core {
            connection.handle_wakeup(now());
        }
        if woken.timer {
            armed = false;
            connection.handle_timeout(now());
        }
    }
    io.map(|bufs| bufs.write).unwrap_or_default()
}

/// Writes as much of `buf` as the transport takes now, adding what it took to `sent`, and
/// flushes it once all is written (a TLS transport holds written bytes until then). Ready with
/// `Ok` once `buf` is empty.
fn poll_write_all<S: Transport>(
    stream: &mut S,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    sent: &mut usize,
) -> Poll<io::Result<()>> {
    let all = buf.len();
    poll_write_front(stream, cx, buf, all, sent)
}

/// Writes the first `limit` bytes of `buf` (taking them off it) and flushes.
fn poll_write_front<S: Transport>(
    stream: &mut S,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    mut limit: usize,
    sent: &mut usize,
) -> Poll<io::Result<()>> {
    while limit > 0 && !buf.is_empty() {
        let front = match buf.get(..limit) {
            Some(front) => front,
            None => &buf[..],
        };
        match Pin::new(&mut *stream).poll_write(cx, front) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => {
                *sent += n;
                buf.advance(n);
                limit = limit.saturating_sub(n);
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
    Pin::new(&mut *stream).poll_flush(cx)
}

/// Reads what the transport has now into `buf`: at most a chunk, or the rest of a larger
/// packet that has begun. One read never holds more than that, so the replies to what it
/// holds are bounded too (a client sending tiny packets whose answers it does not read cannot
/// queue up more than a chunk's worth before reading stops). Ready with the number of bytes
/// read, 0 at the end of the stream.
///
/// Into an empty buffer the read goes through a chunk on the stack, so that an idle
/// connection waiting to read holds no buffer; a packet under way is read into the buffer
/// that holds its start.
fn poll_read_some<S: Transport>(
    stream: &mut S,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    let want = match midge_codec::Packet::peek_len(buf) {
        Some(len) if len > buf.len() => (len - buf.len()).max(READ_CHUNK),
        _ => READ_CHUNK,
    };
    let n = if buf.is_empty() {
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut read = ReadBuf::uninit(&mut chunk);
        match Pin::new(&mut *stream).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        buf.extend_from_slice(read.filled());
        read.filled().len()
    } else {
        buf.reserve(want);
        match tokio_util::io::poll_read_buf(Pin::new(&mut *stream), cx, &mut buf.limit(want)) {
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    };
    Poll::Ready(Ok(n))
}

/// Flushes what the connection still has (a DISCONNECT or a refusing CONNACK), closes the
/// write side, and discards input until the peer closes too, so that unread input does not
/// make the kernel reset the connection before the peer has read our last packet.
async fn close<S: Transport>(connection: &mut Connection, mut stream: S, mut wbuf: BytesMut) {
    loop {
        let at = now();
        while wbuf.len() < MAX_WRITE && connection.poll_transmit(at, &mut wbuf) {}
        if wbuf.is_empty() {
            break;
        }
        // Held output goes only once the journal has what it answers for.
        let ticket = connection.output_ticket();
        // Borrowed mutably: a shared borrow held across the wait would need the connection
        // to be `Sync`.
        let waiting = &mut *connection;
        if std::future::poll_fn(move |cx| waiting.poll_durable(ticket, cx))
            .await
            .is_err()
        {
            break;
        }
        let mut sent = 0;
        let written =
            std::future::poll_fn(|cx| poll_write_all(&mut stream, cx, &mut wbuf, &mut sent)).await;
        connection.core().counters.per_thread.written(sent);
        if written.is_err() {
            break;
        }
    }
    let _ = stream.shutdown().await;
    let mut scratch = vec![0u8; 4096];
    if connection.core().is_stopping() {
        // The broker stops: it does not wait for each peer to close (a client that is busy,
        // or not reading, would hold the exit for `close_timeout_ms`). Input already received
        // is read, since a socket closed with unread input is reset, and a reset may discard
        // the DISCONNECT before the peer reads it; then the connection is dropped.
        while std::future::poll_fn(|cx| ready_input(&mut stream, cx, &mut scratch)).await {}
    } else {
        // Until the peer closes (within `close_timeout_ms`), so that nothing it still sends
        // resets the connection before it has read the last packet.
        while matches!(stream.read(&mut scratch).await, Ok(n) if n > 0) {}
    }
}

/// Reads input that has arrived, without waiting for more: whether any was read.
fn ready_input<S: Transport>(
    stream: &mut S,
    cx: &mut Context<'_>,
    scratch: &mut [u8],
) -> Poll<bool> {
    let mut buf = ReadBuf::new(scratch);
    match Pin::new(stream).poll_read(cx, &mut buf) {
        Poll::Ready(Ok(())) => Poll::Ready(!buf.filled().is_empty()),
        Poll::Ready(Err(_)) | Poll::Pending => Poll::Ready(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AllowAll, BrokerConfig, MemoryStore, Standalone};

    /// An idle connection's memory is mostly its task; jemalloc's size classes step from 1 KiB
    /// to 1.25 KiB, so a future a few bytes over 1 KiB costs a quarter more per connection.
    #[tokio::test]
    async fn a_connection_task_fits_in_one_kib() {
        let core = Core::new(
            BrokerConfig::default(),
            Arc::new(AllowAll),
            Arc::new(MemoryStore::new()),
            Arc::new(Standalone),
            now(),
        )
        .expect("valid");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (done, _) = tokio::sync::mpsc::channel(1);
        let gate = crate::listener::Gate::new(None, done);
        let admission = gate.admit().expect("no limit");
        let task = run(core, stream, addr, now(), Origin::default(), admission);
        let size = size_of_val(&task);
        eprintln!("connection task: {size} bytes");
        assert!(size <= 1024, "the connection task grew to {size} bytes");
    }
}
