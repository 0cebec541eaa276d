//! One tokio task per connection: it moves bytes between the socket and the core's
//! [`Connection`], sleeps until the connection's deadline, and wakes when the core has
//! something for it. Every decision is the core's; this is the I/O and the waiting.
//!
//! A client that does not read never stalls the task: its output waits in the write buffer
//! while the task goes on, and deliveries pile up in the session's bounded queue (and are
//! dropped and counted past its limits).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::core::{Connection, Core};
use crate::stats::add;

/// Bytes gathered into one write before it is handed to the writer.
const MAX_WRITE: usize = 256 * 1024;
/// Read buffer headroom per read.
const READ_CHUNK: usize = 8 * 1024;

/// The driver's clock: tokio's, so that a test on a paused clock pauses the broker too.
pub(crate) fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// What woke the connection's task; any number of these at once.
#[derive(Default)]
struct Woken {
    readable: bool,
    writable: bool,
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
        self.read.is_empty() && self.write.is_empty()
    }
}

/// Runs one connection to its end; the returned future ends when the socket is closed, and
/// drops `done` then.
///
/// The task of an idle connection is most of its memory, so the future is kept small: the
/// waits are polled by hand (socket readiness and the connection keep their wakers
/// themselves, with no waiter stored in the task), and both buffers live in one box that
/// exists only while either holds bytes.
pub(crate) fn run(
    core: Arc<Core>,
    stream: TcpStream,
    peer: SocketAddr,
    done: mpsc::Sender<()>,
) -> impl Future<Output = ()> + Send {
    let _ = stream.set_nodelay(true);
    let mut connection = Connection::new(&core, peer, now());
    async move {
        let unsent = drive(&core, &mut connection, &stream).await;
        let close_timeout = Duration::from_millis(core.config.limits.close_timeout_ms);
        let _ = tokio::time::timeout(
            close_timeout,
            Box::pin(close(&core, &mut connection, stream, unsent)),
        )
        .await;
        drop(connection);
        drop(done);
    }
}

/// Serves the connection until it is closed. Returns output the socket did not take yet.
async fn drive(core: &Core, connection: &mut Connection, stream: &TcpStream) -> BytesMut {
    let mut io: Option<Box<Buffers>> = None;
    let sleep = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(sleep);
    // Whether `sleep` runs to the connection's next deadline (its own deadline says which).
    let mut armed = false;
    loop {
        let bufs = io.get_or_insert_with(Box::default);
        // Input that waited (for more bytes, or for the connection to want it again).
        if !bufs.read.is_empty() && connection.wants_input() {
            connection.handle_input(now(), &mut bufs.read);
        }
        // Transmit: as many packets as fit into the write buffer, then one write for them all.
        // The socket usually takes them at once, which saves a wait.
        let at = now();
        while bufs.write.len() < MAX_WRITE && connection.poll_transmit(at, &mut bufs.write) {}
        // Stopped by the buffer's limit, not for lack of output: more may be queued.
        let more_queued = bufs.write.len() >= MAX_WRITE;
        if !bufs.write.is_empty() && write_some(core, stream, &mut bufs.write).is_err() {
            // The peer is gone: what it did not take is dropped with the connection.
            bufs.write = BytesMut::new();
            connection.connection_lost(now());
            continue;
        }
        // A peer that does not read its output is not read from either, once a full buffer of
        // output waits for it; nor while the connection waits.
        let can_read = bufs.write.len() < MAX_WRITE && connection.wants_input();
        // Output still queued waits for room in the socket too, even when the socket took the
        // whole buffer: nothing else may come to wake this task (a QoS 0 backlog has no
        // acknowledgements). A socket that took everything is still writable, so this wait
        // ends at once, through tokio's budget, which lets other tasks run.
        let must_write = !bufs.write.is_empty() || more_queued;
        if bufs.release_empty() {
            io = None;
            connection.release_idle_memory();
        }
        if connection.is_closed() {
            break;
        }
        // Work that nothing else will wake this task for: it goes on at once, through tokio's
        // budget so that a long inbox does not keep other tasks from running.
        let again = connection.has_work();
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
        let mut timer = sleep.as_mut();
        let conn = &mut *connection;
        let woken = std::future::poll_fn(move |cx| {
            let mut woken = Woken::default();
            if can_read {
                match stream.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => woken.readable = true,
                    Poll::Ready(Err(_)) => woken.failed = true,
                    Poll::Pending => {}
                }
            }
            if must_write {
                match stream.poll_write_ready(cx) {
                    Poll::Ready(Ok(())) => woken.writable = true,
                    Poll::Ready(Err(_)) => woken.failed = true,
                    Poll::Pending => {}
                }
            }
            woken.core = conn.poll_wakeup(cx).is_ready();
            if again {
                if let Poll::Ready(progress) = tokio::task::coop::poll_proceed(cx) {
                    progress.made_progress();
                    woken.again = true;
                }
            }
            woken.timer = timer_armed && timer.as_mut().poll(cx).is_ready();
            let any = woken.readable || woken.writable || woken.core || woken.timer || woken.again;
            if any || woken.failed {
                Poll::Ready(woken)
            } else {
                Poll::Pending
            }
        })
        .await;
        if woken.failed {
            connection.connection_lost(now());
            continue;
        }
        if woken.writable || woken.readable {
            let bufs = io.get_or_insert_with(Box::default);
            if woken.writable && write_some(core, stream, &mut bufs.write).is_err() {
                bufs.write = BytesMut::new();
                connection.connection_lost(now());
                continue;
            }
            if woken.readable {
                // At most a chunk, or the rest of a larger packet that has begun: one read
                // never holds more than that, so the replies to what it holds are bounded too
                // (a client sending tiny packets whose answers it does not read cannot queue
                // up more than a chunk's worth before reading stops).
                let want = match midge_codec::Packet::peek_len(&bufs.read) {
                    Some(len) if len > bufs.read.len() => (len - bufs.read.len()).max(READ_CHUNK),
                    _ => READ_CHUNK,
                };
                bufs.read.reserve(want);
                match stream.try_read_buf(&mut (&mut bufs.read).limit(want)) {
                    Ok(0) => connection.connection_lost(now()),
                    Ok(n) => {
                        add(&core.counters.bytes_received, n as u64);
                        connection.handle_input(now(), &mut bufs.read);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => connection.connection_lost(now()),
                }
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

/// Flushes what the connection still has (a DISCONNECT or a refusing CONNACK), closes the
/// write side, and discards input until the peer closes too, so that unread input does not
/// make the kernel reset the connection before the peer has read our last packet.
async fn close(
    core: &Core,
    connection: &mut Connection,
    mut stream: TcpStream,
    mut wbuf: BytesMut,
) {
    loop {
        let at = now();
        while wbuf.len() < MAX_WRITE && connection.poll_transmit(at, &mut wbuf) {}
        if wbuf.is_empty() {
            break;
        }
        if stream.writable().await.is_err() || write_some(core, &stream, &mut wbuf).is_err() {
            break;
        }
    }
    let _ = stream.shutdown().await;
    let mut scratch = vec![0u8; 4096];
    while matches!(stream.read(&mut scratch).await, Ok(n) if n > 0) {}
}

/// Writes as much of `buf` as the socket takes now.
fn write_some(core: &Core, stream: &TcpStream, buf: &mut BytesMut) -> std::io::Result<()> {
    while !buf.is_empty() {
        match stream.try_write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                add(&core.counters.bytes_sent, n as u64);
                buf.advance(n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (done, _) = mpsc::channel(1);
        let task = run(core, stream, addr, done);
        let size = size_of_val(&task);
        eprintln!("connection task: {size} bytes");
        assert!(size <= 1024, "the connection task grew to {size} bytes");
    }
}
