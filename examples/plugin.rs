//! A plugin: one type that brings its routes, its middleware and its
//! lifecycle hooks to any `shardcast.v1` application.
//!
//! `Audit` counts the connections of its shard, greets each new one with a
//! `hello` event naming its shard, answers the event `audit` with
//! `open=N requests=M` for its shard, and counts every request on the way
//! through its message layer. Shard-local state is an `Rc<Cell<_>>` shared
//! by the plugin's closures: each shard has its own plugin, so no lock is
//! needed. Run it with `cargo run -p shardcast-examples --bin plugin`.

use std::cell::Cell;
use std::rc::Rc;

use shardcast::v1::{Plugin, Protocol, Request, Router, SUBPROTOCOL, Verdict, emit};
use shardcast::{Conn, Server};

/// What `Audit` counts on its shard.
#[derive(Debug, Default)]
struct Counts {
    open: Cell<u64>,
    requests: Cell<u64>,
}

/// The audit plugin.
#[derive(Debug, Default)]
struct Audit {
    counts: Rc<Counts>,
}

impl<S: Default + Send + 'static> Plugin<S> for Audit {
    fn name(&self) -> &str {
        "audit"
    }

    fn register(self: Box<Self>, protocol: &mut Protocol<S>) {
        let counts = Rc::clone(&self.counts);
        protocol.add_open_hook(move |conn| {
            counts.open.set(counts.open.get() + 1);
            let shard = conn.id().shard().to_string();
            let _ = emit(conn, "hello", shard.as_bytes());
        });
        let counts = Rc::clone(&self.counts);
        protocol.add_close_hook(move |_conn, _code, _reason| {
            counts.open.set(counts.open.get() - 1);
        });
        let counts = Rc::clone(&self.counts);
        protocol.add_message_layer(move |_conn: &mut Conn<_>, _request: &mut Request<'_>| {
            counts.requests.set(counts.requests.get() + 1);
            Verdict::Pass
        });
        let counts = self.counts;
        protocol.router_mut().add("audit", move |_conn, _payload| {
            Ok(format!(
                "open={} requests={}",
                counts.open.get(),
                counts.requests.get()
            )
            .into_bytes())
        });
    }
}

fn main() -> anyhow::Result<()> {
    let handle = Server::builder()
        .listen(shardcast_examples::listen_addr()?)
        .subprotocols([SUBPROTOCOL])
        .build(|_shard| Protocol::<()>::new(Router::new()).plugin(Audit::default()))
        .start()?;
    shardcast_examples::run_until_signal(&handle)
}
