//! The handle applications hold: rooms, publishing, events and requests,
//! raw messages, and closing.

use std::sync::Arc;

use shardcast_proto::envelope::ErrorCode;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};

use crate::config::{Config, Mode};
use crate::driver::{Answer, Command, Driver, Payload, Queued, Reply};
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::event::Events;
use crate::link;
use crate::outbox::Outbox;
use crate::outgoing::Outgoing;
use crate::sequence::Position;

/// A connection to a shardcast server that survives disconnections.
///
/// Cheap to clone: every clone drives the same connection. The connection
/// lives on a task of its own, which [`Client::start`] spawns; it ends when
/// [`Client::close`] is called or every clone is dropped.
///
/// Every sending method takes a place in the send buffer first (see
/// [`SendBuffer`](crate::SendBuffer)): while the client is disconnected,
/// what is sent waits there and is written once, in order, after the
/// session is resumed. Methods that wait for the server's answer give up
/// after [`Config::request_timeout`], counted from the call.
///
/// # Cancel safety
/// Dropping the future of a call that waits for an answer abandons the
/// wait: if the request has not been written yet, it never is; if it has,
/// the answer is discarded.
#[derive(Clone, Debug)]
pub struct Client {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    commands: mpsc::UnboundedSender<Command>,
    outbox: Outbox,
    mode: Mode,
    request_timeout: std::time::Duration,
}

impl Client {
    /// Starts a client for `config` on the current Tokio runtime and
    /// returns it with its event stream. It connects in the background:
    /// the first events are [`Event::Connecting`](crate::Event::Connecting)
    /// then [`Event::Connected`](crate::Event::Connected) (or
    /// [`Event::Disconnected`](crate::Event::Disconnected) and another
    /// attempt).
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a URL that is not `ws://`,
    /// [`Error::Request`] for an extra header that cannot be sent, and
    /// [`Error::NoRuntime`] outside a Tokio runtime.
    pub fn start(config: Config) -> Result<(Client, Events), Error> {
        let endpoint = Endpoint::parse(&config.url)?;
        link::write_request(&endpoint, &config, [0; 16], &mut Vec::new())?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let seed = getrandom::u64().map_err(|error| Error::Io(std::io::Error::other(error)))?;
        let (commands, command_receiver) = mpsc::unbounded_channel();
        let (event_sender, events) = mpsc::unbounded_channel();
        let outbox = Outbox::new(config.buffer);
        let shared = Shared {
            commands,
            outbox: outbox.clone(),
            mode: config.mode,
            request_timeout: config.request_timeout,
        };
        let driver = Driver::new(
            config,
            endpoint,
            command_receiver,
            event_sender,
            outbox,
            seed,
        );
        runtime.spawn(driver.run());
        Ok((
            Client {
                shared: Arc::new(shared),
            },
            Events::new(events),
        ))
    }

    /// Joins `room` and returns its position at the join: the next message
    /// of the room has the next offset. The client rejoins it by itself
    /// after a lost session.
    ///
    /// # Errors
    /// The server's refusal ([`Error::Refused`], such as `Forbidden`),
    /// [`Error::Timeout`], [`Error::Disconnected`], [`Error::BufferFull`],
    /// [`Error::Closed`], or [`Error::WrongMode`] in raw mode.
    pub async fn join(&self, room: &str) -> Result<Position, Error> {
        self.join_room(room, false).await
    }

    /// Joins `room` like [`Client::join`], with
    /// [`Event::Presence`](crate::Event::Presence) updates of its members.
    ///
    /// # Errors
    /// As [`Client::join`].
    pub async fn join_with_presence(&self, room: &str) -> Result<Position, Error> {
        self.join_room(room, true).await
    }

    async fn join_room(&self, room: &str, presence: bool) -> Result<Position, Error> {
        let answer = self
            .request_envelope(Outgoing::Join {
                room: room.to_owned(),
                presence,
                ack: None,
            })
            .await?;
        Ok(answer.position.unwrap_or_default())
    }

    /// Leaves `room`; its messages stop.
    ///
    /// # Errors
    /// As [`Client::join`].
    pub async fn leave(&self, room: &str) -> Result<(), Error> {
        self.request_envelope(Outgoing::Leave {
            room: room.to_owned(),
            ack: None,
        })
        .await
        .map(drop)
    }

    /// Publishes `payload` to `room` without waiting for the server: the
    /// call returns once the message is in the send buffer. A refusal comes
    /// as an [`Event::ServerError`](crate::Event::ServerError).
    ///
    /// # Errors
    /// [`Error::BufferFull`], [`Error::Timeout`] (waiting for room in the
    /// buffer), [`Error::Closed`], [`Error::WrongMode`].
    pub async fn publish(&self, room: &str, payload: &[u8]) -> Result<(), Error> {
        self.send_envelope(Outgoing::Publish {
            room: room.to_owned(),
            payload: payload.to_vec(),
            exclude_self: false,
            ack: None,
        })
        .await
    }

    /// Publishes `payload` to `room` and returns the position the server
    /// gave the message.
    ///
    /// # Errors
    /// As [`Client::join`]: with [`Error::Disconnected`] the message may or
    /// may not have been published, and it is not sent again.
    pub async fn publish_acked(&self, room: &str, payload: &[u8]) -> Result<Position, Error> {
        let answer = self
            .request_envelope(Outgoing::Publish {
                room: room.to_owned(),
                payload: payload.to_vec(),
                exclude_self: false,
                ack: None,
            })
            .await?;
        Ok(answer.position.unwrap_or_default())
    }

    /// Sends the event `name` with `payload` to the server, expecting no
    /// answer.
    ///
    /// # Errors
    /// As [`Client::publish`].
    pub async fn emit(&self, name: &str, payload: &[u8]) -> Result<(), Error> {
        self.send_envelope(Outgoing::Event {
            name: name.to_owned(),
            payload: payload.to_vec(),
            ack: None,
        })
        .await
    }

    /// Sends the event `name` with `payload` and returns the server
    /// handler's answer.
    ///
    /// # Errors
    /// As [`Client::join`]; an event without a handler on the server is
    /// refused with `UnknownEvent`.
    pub async fn request(&self, name: &str, payload: &[u8]) -> Result<Vec<u8>, Error> {
        let answer = self
            .request_envelope(Outgoing::Event {
                name: name.to_owned(),
                payload: payload.to_vec(),
                ack: None,
            })
            .await?;
        Ok(answer.payload)
    }

    /// Routes the server's events named `name` to `handler`, replacing any
    /// handler of that name. The handler gets the payload and returns the
    /// answer, sent back when the event asks for an acknowledgement (an
    /// error code is sent as a failed acknowledgement). Events without a
    /// handler are answered `UnknownEvent` and logged.
    ///
    /// The handler runs on the client's task, between reads: it must be
    /// quick and must not block (hand long work to another task). A
    /// handler that panics is answered `Internal` and logged; the
    /// connection carries on.
    pub fn on<F>(&self, name: &str, handler: F)
    where
        F: Fn(&[u8]) -> Result<Vec<u8>, ErrorCode> + Send + Sync + 'static,
    {
        // A closed client has no events to route.
        let _ = self
            .shared
            .commands
            .send(Command::On(name.to_owned(), Arc::new(handler)));
    }

    /// Sends a text message, in raw mode.
    ///
    /// # Errors
    /// [`Error::WrongMode`] in `shardcast.v1` mode; otherwise as
    /// [`Client::publish`].
    pub async fn send_text(&self, text: &str) -> Result<(), Error> {
        self.send_raw(Payload::Text(text.to_owned())).await
    }

    /// Sends a binary message, in raw mode.
    ///
    /// # Errors
    /// As [`Client::send_text`].
    pub async fn send_binary(&self, bytes: &[u8]) -> Result<(), Error> {
        self.send_raw(Payload::Binary(bytes.to_vec())).await
    }

    /// Closes the connection (with a close frame, after writing what is
    /// ready to go) and stops the client, for every clone. Returns once the
    /// client's task has ended; what still waited in the send buffer fails
    /// with [`Error::Closed`].
    pub async fn close(&self) {
        if self.shared.commands.send(Command::Close).is_ok() {
            self.shared.commands.closed().await;
        }
    }

    async fn send_raw(&self, payload: Payload) -> Result<(), Error> {
        if self.shared.mode != Mode::Raw {
            return Err(Error::WrongMode);
        }
        let deadline = Instant::now() + self.shared.request_timeout;
        self.enqueue(payload, Reply::None, deadline).await
    }

    async fn send_envelope(&self, outgoing: Outgoing) -> Result<(), Error> {
        if self.shared.mode != Mode::V1 {
            return Err(Error::WrongMode);
        }
        let deadline = Instant::now() + self.shared.request_timeout;
        self.enqueue(Payload::Envelope(outgoing), Reply::None, deadline)
            .await
    }

    async fn request_envelope(&self, outgoing: Outgoing) -> Result<Answer, Error> {
        if self.shared.mode != Mode::V1 {
            return Err(Error::WrongMode);
        }
        let deadline = Instant::now() + self.shared.request_timeout;
        let (sender, receiver) = oneshot::channel();
        self.enqueue(
            Payload::Envelope(outgoing),
            Reply::Caller { sender, deadline },
            deadline,
        )
        .await?;
        match timeout_at(deadline, receiver).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout),
        }
    }

    /// Takes a place in the send buffer (waiting until `deadline` at most)
    /// and hands `payload` to the driver.
    async fn enqueue(
        &self,
        payload: Payload,
        reply: Reply,
        deadline: Instant,
    ) -> Result<(), Error> {
        let slot = timeout_at(deadline, self.shared.outbox.reserve())
            .await
            .map_err(|_| Error::Timeout)??;
        self.shared
            .commands
            .send(Command::Send(Queued {
                payload,
                reply,
                _slot: Some(slot),
            }))
            .map_err(|_| Error::Closed)
    }
}
