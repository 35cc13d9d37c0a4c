//! A blocking TCP client over smoltcp: connect, write everything, read, close, each
//! with a deadline, polling the interface in between.

use crate::clock;
use crate::net::Net;
use alloc::vec;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{Socket, SocketBuffer, State};
use smoltcp::wire::{IpAddress, IpEndpoint};

/// Why a TCP operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpError {
    /// The peer refused or reset the connection, or it closed unexpectedly.
    Closed,
    /// The deadline passed.
    Timeout,
    /// smoltcp rejected the operation.
    Socket,
}

/// One TCP connection on `net`.
pub struct TcpStream {
    handle: SocketHandle,
}

/// Receive buffer: 512 KiB, so smoltcp offers window scaling (shift 4) and advertises
/// up to 512 KiB; with 64 KiB the sender stalls every 44 segments waiting for ACKs.
const RX_BUF: usize = 512 * 1024;
/// Data waiting in the socket from which a read takes it without polling the stack:
/// while the firmware is the slower end, the sender is held by the window, and an ACK
/// per segment only cost an exit each (sends ~3 900 -> ~2 870 for 64 MiB, fewer and
/// larger TSO segments; 144-155 -> 185-186 MB/s on this machine's KVM). A quarter of
/// [`RX_BUF`]: the window advertised when the socket runs below it is at least 384 KiB.
const READ_AHEAD: usize = 128 * 1024;
/// Transmit buffer (the firmware sends little: a boot request, the evidence).
const TX_BUF: usize = 64 * 1024;
/// First local port; the stack picks the next one per connection.
const LOCAL_PORT: u16 = 49152;

impl TcpStream {
    /// Connects to `ip:port`, waiting until established or `timeout_ms` passed.
    pub fn connect(
        net: &mut Net,
        ip: [u8; 4],
        port: u16,
        timeout_ms: u64,
    ) -> Result<Self, TcpError> {
        let mut sock = Socket::new(
            SocketBuffer::new(vec![0; RX_BUF]),
            SocketBuffer::new(vec![0; TX_BUF]),
        );
        // Whole TCP segments from the device (up to 64 KiB each): each is acknowledged
        // at once. smoltcp's delayed ACK (10 ms, unless two segments wait) held the
        // sender whenever one segment was all it had in flight: 3 MB/s instead of
        // 130 MB/s on this machine's KVM.
        if net.phy.large_receive() {
            sock.set_ack_delay(None);
        }
        let handle = net.sockets.add(sock);
        let [a, b, c, d] = ip;
        let remote = IpEndpoint::new(IpAddress::v4(a, b, c, d), port);
        let local = LOCAL_PORT + (clock::now_ms() % 8192) as u16;
        let cx = net.iface.context();
        net.sockets
            .get_mut::<Socket>(handle)
            .connect(cx, remote, local)
            .map_err(|_| TcpError::Socket)?;
        let s = TcpStream { handle };
        let deadline = clock::now_ms() + timeout_ms;
        loop {
            net.poll();
            match net.sockets.get::<Socket>(handle).state() {
                State::Established => return Ok(s),
                State::Closed | State::TimeWait => return Err(TcpError::Closed),
                _ => {}
            }
            if clock::now_ms() > deadline {
                return Err(TcpError::Timeout);
            }
        }
    }

    /// Sends all of `data`.
    pub fn write_all(
        &mut self,
        net: &mut Net,
        mut data: &[u8],
        timeout_ms: u64,
    ) -> Result<(), TcpError> {
        let deadline = clock::now_ms() + timeout_ms;
        while !data.is_empty() {
            let sock = net.sockets.get_mut::<Socket>(self.handle);
            if !sock.may_send() {
                return Err(TcpError::Closed);
            }
            if sock.can_send() {
                let n = sock.send_slice(data).map_err(|_| TcpError::Socket)?;
                data = &data[n..];
            }
            net.poll();
            if clock::now_ms() > deadline {
                return Err(TcpError::Timeout);
            }
        }
        Ok(())
    }

    /// Flushes what was written (until the peer acknowledged it or the deadline).
    pub fn flush(&mut self, net: &mut Net, timeout_ms: u64) -> Result<(), TcpError> {
        let deadline = clock::now_ms() + timeout_ms;
        loop {
            net.poll();
            let sock = net.sockets.get::<Socket>(self.handle);
            if sock.send_queue() == 0 {
                return Ok(());
            }
            if !sock.may_send() {
                return Err(TcpError::Closed);
            }
            if clock::now_ms() > deadline {
                return Err(TcpError::Timeout);
            }
        }
    }

    /// Reads at least one byte into `buf`; `Ok(0)` when the peer closed.
    pub fn read(
        &mut self,
        net: &mut Net,
        buf: &mut [u8],
        timeout_ms: u64,
    ) -> Result<usize, TcpError> {
        let deadline = clock::now_ms() + timeout_ms;
        loop {
            // With READ_AHEAD or more waiting in the socket the stack is not polled
            // at all; with less, only what the ring holds is taken in (and the ACK and
            // window update sent) without asking the device; with none, the device is
            // asked (an exit).
            let waiting = net.sockets.get::<Socket>(self.handle).recv_queue();
            if waiting == 0 {
                net.poll();
            } else if waiting < READ_AHEAD {
                net.poll_ring();
            }
            let sock = net.sockets.get_mut::<Socket>(self.handle);
            if sock.can_recv() {
                return sock.recv_slice(buf).map_err(|_| TcpError::Socket);
            }
            if !sock.may_recv() {
                return Ok(0);
            }
            if clock::now_ms() > deadline {
                return Err(TcpError::Timeout);
            }
            // Nothing to read and the ACKs are out: wait for the device.
            net.phy.idle();
        }
    }

    /// Closes the connection (FIN) and lets the stack send it.
    pub fn close(self, net: &mut Net) {
        net.sockets.get_mut::<Socket>(self.handle).close();
        for _ in 0..100 {
            net.poll();
        }
    }
}
