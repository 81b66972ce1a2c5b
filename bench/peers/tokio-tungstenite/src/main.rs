//! A plain WebSocket echo server on tokio-tungstenite, written the way its
//! documentation and examples show: a current-thread tokio runtime, one
//! task per connection, `accept_async`, and the message stream forwarded
//! to the sink, text and binary messages only.
//!
//! Usage: `tokio-tungstenite-echo --listen 127.0.0.1:9001`

use futures_util::{StreamExt, TryStreamExt, future};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let listen = listen_address();
    let listener = TcpListener::bind(&listen).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(echo(stream));
    }
}

/// Echoes one connection's messages until it closes or fails.
async fn echo(stream: TcpStream) {
    stream.set_nodelay(true).ok();
    let Ok(websocket) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (write, read) = websocket.split();
    // A closed or reset connection ends the echo; there is no one to tell.
    let _ = read
        .try_filter(|message| future::ready(message.is_text() || message.is_binary()))
        .forward(write)
        .await;
}

/// The value of `--listen ADDR`, `127.0.0.1:9001` when absent.
fn listen_address() -> String {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:9001".to_owned();
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(address)) => listen = address,
            _ => {
                eprintln!("usage: tokio-tungstenite-echo [--listen ADDR]");
                std::process::exit(2);
            }
        }
    }
    listen
}
