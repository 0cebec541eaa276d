//! The ceiling for the `filters` scenario of `midge bench`, with no MQTT in it: one `write()`
//! per message to a random one of many loopback TCP connections, and a second process that
//! drains their other ends with epoll, as a load generator's subscribers do. Whatever a
//! broker does per delivery comes on top of this.
//!
//! ```text
//! cargo run --release -p midge-benches --example loopback_ceiling -- [CONNECTIONS] [MESSAGES] [BYTES]
//! ```
//!
//! Defaults: 10,000 connections, 1,000,000 messages of 90 bytes (a 64-byte PUBLISH with its
//! topic). Two processes, because 10,000 connections take 20,000 descriptors in one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

fn arg(args: &[String], i: usize, default: u64) -> u64 {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--reader") {
        let port = arg(&args, 2, 0) as u16;
        return reader(port, arg(&args, 3, 0) as usize, arg(&args, 4, 0));
    }
    let connections = arg(&args, 1, 10_000) as usize;
    let messages = arg(&args, 2, 1_000_000);
    let bytes = arg(&args, 3, 90) as usize;

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--reader", &port.to_string(), &connections.to_string()])
        .arg((messages * bytes as u64).to_string())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut streams = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        streams.push(s);
    }
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let _ready = lines.next();

    let message = vec![0u8; bytes];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let start = Instant::now();
    for _ in 0..messages {
        // xorshift64: a random connection per message, as random topics give.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = (x % connections as u64) as usize;
        streams[k].write_all(&message)?;
    }
    let written = start.elapsed();
    let report = lines.next().transpose()?.unwrap_or_default();
    child.wait()?;
    let all = start.elapsed();
    println!(
        "{connections} connections, {messages} messages of {bytes} B: writer {:.0} writes/s; \
         all read after {:.2} s: {:.0} deliveries/s; reader: {report}",
        messages as f64 / written.as_secs_f64(),
        all.as_secs_f64(),
        messages as f64 / all.as_secs_f64(),
    );
    Ok(())
}

fn reader(port: u16, connections: usize, total: u64) -> std::io::Result<()> {
    let mut poll = Poll::new()?;
    let mut streams = Vec::with_capacity(connections);
    for i in 0..connections {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        let mut s = mio::net::TcpStream::from_std(s);
        poll.registry()
            .register(&mut s, Token(i), Interest::READABLE)?;
        streams.push(s);
    }
    println!("ready");
    std::io::stdout().flush()?;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let (mut got, mut reads, mut polls) = (0u64, 0u64, 0u64);
    while got < total {
        poll.poll(&mut events, Some(Duration::from_secs(5)))?;
        if events.is_empty() {
            break;
        }
        polls += 1;
        for event in &events {
            let Some(s) = streams.get_mut(event.token().0) else {
                continue;
            };
            // Edge-triggered: read until the socket is empty, as tokio does.
            loop {
                reads += 1;
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got += n as u64,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    println!("{got} of {total} bytes, {reads} reads, {polls} polls");
    Ok(())
}
