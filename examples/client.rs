//! The Rust client against `shardcast serve`: joins a room, publishes to
//! it, receives its own message back, asks the server's `echo` event, and
//! prints every lifecycle event on the way.
//!
//! Start a server (`cargo run -p shardcast -- serve`), then
//! `cargo run -p shardcast-examples --bin client -- --url ws://127.0.0.1:8080/`.
//! Each step prints one line; the program exits once the round trip is
//! done, or fails after 10 seconds without it.

use std::time::Duration;

use anyhow::{Context, bail};
use shardcast_client::{Client, Config, Event, Events, RoomMessage};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// How long the whole round trip may take.
const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let url = url()?;
    timeout(DEADLINE, run(&url))
        .await
        .with_context(|| format!("no round trip with {url} within {DEADLINE:?}"))?
}

/// The value of `--url`, or the default server's address.
fn url() -> anyhow::Result<String> {
    let mut args = std::env::args().skip(1);
    let mut url = "ws://127.0.0.1:8080/".to_owned();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--url" => url = args.next().context("--url needs a ws:// URL")?,
            other => bail!("unknown argument {other}; the only one is --url ws://HOST:PORT/"),
        }
    }
    Ok(url)
}

async fn run(url: &str) -> anyhow::Result<()> {
    let (client, events) = Client::start(Config::new(url))?;
    let (messages, mut received) = mpsc::unbounded_channel();
    let printer = tokio::spawn(print_events(events, messages));

    let joined = client.join("lobby").await?;
    println!("joined lobby at {joined}");
    let published = client.publish_acked("lobby", b"hello from Rust").await?;
    println!("published at {published}");
    while let Some(message) = received.recv().await {
        println!(
            "received {:?} in {} at {}",
            String::from_utf8_lossy(&message.payload),
            message.room,
            message.position,
        );
        if message.position == published {
            break;
        }
    }
    let echo = client.request("echo", b"are you there?").await?;
    println!("echo answered {:?}", String::from_utf8_lossy(&echo));
    client.close().await;
    printer.await?;
    Ok(())
}

/// Prints the client's lifecycle events as they come and hands room
/// messages to `messages`, until the client stops.
async fn print_events(mut events: Events, messages: mpsc::UnboundedSender<RoomMessage>) {
    while let Some(event) = events.next().await {
        match event {
            Event::Message(message) => {
                // The main task stops reading once its message came back.
                let _ = messages.send(message);
            }
            Event::Connecting { attempt } => println!("connecting (attempt {attempt})"),
            Event::Connected { session_id } => {
                println!(
                    "connected, session {}",
                    session_id.as_deref().unwrap_or("-")
                );
            }
            Event::Resumed { session_id } => println!("resumed session {session_id}"),
            Event::RecoveryFailed {
                room,
                code,
                position,
            } => println!("recovery failed for {room}: {code:?}, continuing at {position:?}"),
            Event::Disconnected { reason } => println!("disconnected: {reason:?}"),
            other => println!("{other:?}"),
        }
    }
}
