//! A loopback TCP proxy that can fail the way networks fail: cut every
//! connection (both sides closed at once), or blackhole traffic (sockets
//! stay open, bytes vanish in both directions) until healed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A proxy on 127.0.0.1 in front of `upstream`.
pub(crate) struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    upstream: SocketAddr,
    /// Bytes read are dropped instead of forwarded while set.
    blackhole: AtomicBool,
    /// Bumped by every cut: connections opened before it end.
    cuts: watch::Sender<u64>,
}

impl Proxy {
    /// Listens on a free port and forwards each connection to `upstream`.
    pub(crate) async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            blackhole: AtomicBool::new(false),
            cuts: watch::channel(0).0,
        });
        let accepting = Arc::clone(&shared);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, Arc::clone(&accepting)));
            }
        });
        Proxy { addr, shared }
    }

    /// The proxy's address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `ws://` URL of the proxy.
    pub(crate) fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Closes every connection open now, on both sides.
    pub(crate) fn cut(&self) {
        self.shared.cuts.send_modify(|cuts| *cuts += 1);
    }

    /// Starts dropping every byte, both ways, on every connection (open or
    /// new), while the sockets stay open.
    pub(crate) fn blackhole(&self) {
        self.shared.blackhole.store(true, Ordering::SeqCst);
    }

    /// Forwards bytes again.
    pub(crate) fn heal(&self) {
        self.shared.blackhole.store(false, Ordering::SeqCst);
    }
}

/// Relays one client connection until either side closes or a cut.
async fn relay(client: TcpStream, shared: Arc<Shared>) {
    let mut cuts = shared.cuts.subscribe();
    cuts.mark_unchanged();
    let Ok(server) = TcpStream::connect(shared.upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        () = pump(client_read, server_write, &shared) => {}
        () = pump(server_read, client_write, &shared) => {}
        _ = cuts.changed() => {}
    }
    // Dropping both halves of both sockets closes them.
}

/// Copies `from` to `to` until `from` ends, dropping what is read while
/// the blackhole is on.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, shared: &Shared) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if shared.blackhole.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
