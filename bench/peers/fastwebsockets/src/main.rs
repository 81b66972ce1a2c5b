//! A plain WebSocket echo server on fastwebsockets, written the way its
//! `echo_server` example and README show: a current-thread tokio runtime,
//! hyper's HTTP/1 server doing the upgrade (`fastwebsockets::upgrade`),
//! one task per connection run unconstrained by tokio's cooperative
//! budget, a `FragmentCollector` handing over whole messages, vectored
//! writes, automatic close and pong replies, and text and binary messages
//! written back as they came.
//!
//! Usage: `fastwebsockets-echo PORT`, listening on 127.0.0.1:PORT.

use std::net::{Ipv4Addr, SocketAddr};

use fastwebsockets::upgrade::{self, UpgradeFut};
use fastwebsockets::{FragmentCollector, OpCode, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port()));
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?
        .block_on(serve(address))
}

/// Accepts connections on `address` for ever, one task each.
async fn serve(address: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(address).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(connection(stream));
    }
}

/// Serves one connection's HTTP/1 requests until one upgrades it.
async fn connection(stream: TcpStream) {
    stream.set_nodelay(true).ok();
    let http = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service_fn(upgrade))
        .with_upgrades();
    // A request that is no upgrade, or a connection that fails, ends here;
    // there is no one to tell.
    let _ = http.await;
}

/// Answers an upgrade request with 101 and starts the echo on the
/// upgraded connection.
async fn upgrade(mut request: Request<Incoming>) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, upgraded) = upgrade::upgrade(&mut request)?;
    tokio::spawn(tokio::task::unconstrained(echo(upgraded)));
    Ok(response)
}

/// Echoes one connection's messages until it closes or fails.
async fn echo(upgraded: UpgradeFut) {
    // A closed or reset connection ends the echo; there is no one to tell.
    let _ = echo_messages(upgraded).await;
}

/// Writes back every text and binary message; fastwebsockets answers pings
/// and closes by itself.
async fn echo_messages(upgraded: UpgradeFut) -> Result<(), WebSocketError> {
    let mut websocket = upgraded.await?;
    websocket.set_writev(true);
    websocket.set_auto_close(true);
    websocket.set_auto_pong(true);
    let mut websocket = FragmentCollector::new(websocket);
    loop {
        let frame = websocket.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => websocket.write_frame(frame).await?,
            _ => {}
        }
    }
}

/// The port given as the first and only argument.
fn port() -> u16 {
    let mut args = std::env::args().skip(1);
    match (args.next().map(|port| port.parse()), args.next()) {
        (Some(Ok(port)), None) => port,
        _ => {
            eprintln!("usage: fastwebsockets-echo PORT");
            std::process::exit(2);
        }
    }
}
