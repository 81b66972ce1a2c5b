//! The `shardcast.v1` protocol end to end, with tungstenite clients that
//! write and read envelopes with `shardcast_proto`: acknowledgements and
//! their errors, batches, raw clients, unreadable envelopes, the request
//! rate limit, message and upgrade layers, and plugins.

mod common;

use std::borrow::Cow;
use std::net::TcpStream;

use common::v1_client::{Client, Got, server};
use common::{Driver, on_both_drivers};
use shardcast::CloseCode;
use shardcast::middleware::{ApiKey, RateLimit};
use shardcast::v1::{
    ErrorCode, EventError, Plugin, Protocol, Request, Router, SUBPROTOCOL, Verdict, emit,
};
use shardcast_proto::envelope::{self, Body, VerifyLimits};
use tungstenite::Message;
use tungstenite::client::IntoClientRequest;

fn router() -> Router<u32> {
    Router::<u32>::new()
        .on("echo", |_conn, payload| Ok(payload.to_vec()))
        .on("count", |conn, _payload| {
            let count = conn.state_mut().state_mut();
            *count += 1;
            Ok(count.to_string().into_bytes())
        })
        .on("fail", |_conn, _payload| Err(EventError::forbidden("no")))
        .on("shard", |conn, _payload| {
            Ok(conn.id().shard().index().to_string().into_bytes())
        })
        .on("push", |conn, payload| {
            emit(conn, "pushed", payload).unwrap();
            Ok(Vec::new())
        })
}

/// Every request kind with and without an ack id, and every failure the
/// client can cause, answered with the right code.
fn acknowledgements_and_errors(driver: Driver) {
    let server = server(driver, |b| b, || Protocol::new(router()));
    let mut client = Client::connect(server.addr(), &[]);
    client.send(|w| w.event("echo", b"hello", Some(1)));
    assert_eq!(client.read(), Got::Ack(1, b"hello".to_vec(), None, None));
    client.send(|w| w.event("count", b"", Some(2)));
    client.send(|w| w.event("count", b"", Some(3)));
    assert_eq!(client.read(), Got::Ack(2, b"1".to_vec(), None, None));
    assert_eq!(client.read(), Got::Ack(3, b"2".to_vec(), None, None));
    client.send(|w| w.event("fail", b"", Some(4)));
    assert_eq!(
        client.read(),
        Got::Ack(4, Vec::new(), Some(ErrorCode::Forbidden), None)
    );
    client.send(|w| w.event("nope", b"", Some(5)));
    assert_eq!(
        client.read(),
        Got::Ack(5, Vec::new(), Some(ErrorCode::UnknownEvent), None)
    );
    // Without an ack id: success is silent, failure is an Error.
    client.send(|w| w.event("echo", b"quiet", None));
    client.send(|w| w.event("nope", b"", None));
    assert_eq!(client.read(), Got::Error(ErrorCode::UnknownEvent, None));
    client.send(|w| w.publish("lobby", b"x", false, Some(6)));
    assert_eq!(
        client.read(),
        Got::Ack(6, Vec::new(), Some(ErrorCode::NotJoined), None)
    );
    client.send(|w| w.leave("lobby", None));
    assert_eq!(
        client.read(),
        Got::Error(ErrorCode::NotJoined, Some("lobby".into()))
    );
    client.send(|w| w.join("", Some(7), false));
    assert_eq!(
        client.read(),
        Got::Ack(7, Vec::new(), Some(ErrorCode::BadRequest), None)
    );
    // A server-to-client envelope sent by a client.
    client.send(|w| w.message("lobby", 1, 1, b"", None));
    assert_eq!(client.read(), Got::Error(ErrorCode::BadRequest, None));
    client.send(|w| w.resume("session", b"token", &[]));
    assert_eq!(client.read(), Got::Error(ErrorCode::RecoveryFailed, None));
    // Emitting from a handler.
    client.send(|w| w.event("push", b"data", Some(8)));
    assert_eq!(client.read(), Got::Event("pushed".into(), b"data".to_vec()));
    assert_eq!(client.read(), Got::Ack(8, Vec::new(), None, None));
    client.close();
    server.shutdown();
}
on_both_drivers!(acknowledgements_and_errors);

/// A batch is handled item by item, in order: join, publish, leave.
fn batches_are_handled_in_order(driver: Driver) {
    let server = server(driver, |b| b, || Protocol::new(router()));
    let mut client = Client::connect(server.addr(), &[]);
    client.send(|w| {
        let mut batch = w.batch();
        batch
            .join("room", Some(1), false)
            .publish("room", b"one", false, Some(2))
            .leave("room", Some(3));
        batch.finish()
    });
    // The join was undone by the leave before it took effect: answered
    // without a position, then the leave, at once; the publish once
    // sequenced, and its message did not reach the client, which had left
    // meanwhile.
    assert_eq!(client.read(), Got::Ack(1, Vec::new(), None, None));
    assert_eq!(client.read(), Got::Ack(3, Vec::new(), None, None));
    assert_eq!(client.read(), Got::Ack(2, Vec::new(), None, Some(1)));
    client.send(|w| w.event("echo", b"after", Some(4)));
    assert_eq!(client.read(), Got::Ack(4, b"after".to_vec(), None, None));
    client.close();
    server.shutdown();
}
on_both_drivers!(batches_are_handled_in_order);

/// Unreadable envelopes close with 1007, text messages with 1003, and a
/// client that offers no subprotocol is refused with 400.
fn protocol_violations(driver: Driver) {
    let server = server(driver, |b| b, || Protocol::new(router()));
    let mut client = Client::connect(server.addr(), &[]);
    client
        .socket
        .send(Message::binary(b"not an envelope".to_vec()))
        .unwrap();
    assert_eq!(client.close_code(), Some(1007));
    let mut client = Client::connect(server.addr(), &[]);
    client.socket.send(Message::text("hello")).unwrap();
    assert_eq!(client.close_code(), Some(1003));
    let stream = TcpStream::connect(server.addr()).unwrap();
    let refused = tungstenite::client(format!("ws://{}/", server.addr()), stream);
    match refused {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            assert_eq!(response.status(), 400)
        }
        other => panic!("expected a 400, got {other:?}"),
    }
    server.shutdown();
}
on_both_drivers!(protocol_violations);

/// Past its rate, a connection's requests are refused with RateLimited.
fn the_request_rate_is_limited(driver: Driver) {
    let server = server(
        driver,
        |b| b,
        || Protocol::new(router()).rate_limit(RateLimit::new(1, 3).unwrap()),
    );
    let mut client = Client::connect(server.addr(), &[]);
    for id in 1..=5 {
        client.send(|w| w.event("echo", b"", Some(id)));
    }
    for id in 1..=3 {
        assert_eq!(client.read(), Got::Ack(id, Vec::new(), None, None));
    }
    for id in 4..=5 {
        assert_eq!(
            client.read(),
            Got::Ack(id, Vec::new(), Some(ErrorCode::RateLimited), None)
        );
    }
    client.close();
    server.shutdown();
}
on_both_drivers!(the_request_rate_is_limited);

/// Message layers run in order: one refuses a room, one rewrites
/// payloads, one drops, one closes; an API key layer names the publisher,
/// whom messages reveal.
fn layers_refuse_transform_drop_and_close(driver: Driver) {
    let server = server(
        driver,
        |b| b,
        || {
            Protocol::new(router())
                .upgrade_layer(ApiKey::new().key_for_user("secret", "ada"))
                .reveal_publisher(true)
                .message_layer(|_conn: &mut _, request: &mut Request<'_>| {
                    if request.room() == Some("private") {
                        Verdict::Refuse(EventError::forbidden("members only"))
                    } else {
                        Verdict::Pass
                    }
                })
                .message_layer(|_conn: &mut _, request: &mut Request<'_>| {
                    if let Request::Publish { payload, .. } = request {
                        *payload = Cow::Owned(payload.to_ascii_uppercase());
                    }
                    Verdict::Pass
                })
                .message_layer(|_conn: &mut _, request: &mut Request<'_>| match request {
                    Request::Event { name: "spam", .. } => Verdict::Drop,
                    Request::Event { name: "bye", .. } => {
                        Verdict::Close(CloseCode::POLICY_VIOLATION, "bye".into())
                    }
                    _ => Verdict::Pass,
                })
        },
    );
    let refused = TcpStream::connect(server.addr()).unwrap();
    let mut request = format!("ws://{}/", server.addr())
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", SUBPROTOCOL.parse().unwrap());
    match tungstenite::client(request, refused) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("expected a 401, got {other:?}"),
    }
    let mut client = Client::connect(server.addr(), &[("x-api-key", "secret")]);
    client.send(|w| w.join("private", Some(1), false));
    assert_eq!(
        client.read(),
        Got::Ack(1, Vec::new(), Some(ErrorCode::Forbidden), None)
    );
    client.send(|w| w.join("public", Some(2), false));
    assert_eq!(client.read(), Got::Ack(2, Vec::new(), None, Some(0)));
    client.send(|w| w.publish("public", b"quiet words", false, None));
    assert_eq!(
        client.read(),
        Got::Message(
            "public".into(),
            1,
            b"QUIET WORDS".to_vec(),
            Some("ada".into())
        )
    );
    client.send(|w| w.event("spam", b"", Some(3)));
    client.send(|w| w.event("echo", b"", Some(4)));
    assert_eq!(client.read(), Got::Ack(4, Vec::new(), None, None));
    client.send(|w| w.event("bye", b"", None));
    assert_eq!(client.close_code(), Some(1008));
    server.shutdown();
}
on_both_drivers!(layers_refuse_transform_drop_and_close);

/// A plugin's routes and hooks are registered with it.
fn plugins_register_routes_and_hooks(driver: Driver) {
    /// Greets every connection with an event and answers "ping".
    struct Greeter;

    impl Plugin<u32> for Greeter {
        fn name(&self) -> &str {
            "greeter"
        }

        fn register(self: Box<Self>, protocol: &mut Protocol<u32>) {
            protocol.add_open_hook(|conn| {
                emit(conn, "welcome", b"hi").unwrap();
            });
            protocol
                .router_mut()
                .add("ping", |_conn, _payload| Ok(b"pong".to_vec()));
        }
    }

    let server = server(driver, |b| b, || Protocol::new(router()).plugin(Greeter));
    let mut client = Client::connect(server.addr(), &[]);
    assert_eq!(client.read(), Got::Event("welcome".into(), b"hi".to_vec()));
    client.send(|w| w.event("ping", b"", Some(1)));
    assert_eq!(client.read(), Got::Ack(1, b"pong".to_vec(), None, None));
    client.close();
    server.shutdown();
}
on_both_drivers!(plugins_register_routes_and_hooks);

/// Members that join with presence hear every arrival and departure, with
/// the room's size, whichever shard the others are on; members are named
/// by the user their API key names.
fn presence_follows_arrivals_and_departures(driver: Driver) {
    let server = server(
        driver,
        |b| b,
        || {
            Protocol::new(router()).upgrade_layer(
                ApiKey::new()
                    .key_for_user("k-ada", "ada")
                    .key_for_user("k-bob", "bob")
                    .key_for_user("k-cy", "cy"),
            )
        },
    );
    let mut ada = Client::connect(server.addr(), &[("x-api-key", "k-ada")]);
    ada.send(|w| w.join("hall", Some(1), true));
    let mut got = [ada.read(), ada.read()];
    got.sort_by_key(|g| matches!(g, Got::Ack(..)));
    assert_eq!(got[0], Got::Presence("hall".into(), true, "ada".into(), 1));
    assert!(matches!(got[1], Got::Ack(1, _, None, Some(_))));
    ada.send(|w| w.event("shard", b"", Some(9)));
    let Got::Ack(9, ada_shard, None, None) = ada.read() else {
        panic!("no shard");
    };
    // bob on another shard than ada's, cy on the same.
    for (key, name, same) in [("k-bob", "bob", false), ("k-cy", "cy", true)] {
        let mut other = loop {
            let mut other = Client::connect(server.addr(), &[("x-api-key", key)]);
            other.send(|w| w.event("shard", b"", Some(9)));
            let Got::Ack(9, shard, None, None) = other.read() else {
                panic!("no shard");
            };
            if (shard == ada_shard) == same {
                break other;
            }
            other.close();
        };
        other.send(|w| w.join("hall", Some(1), false));
        assert!(matches!(other.read(), Got::Ack(1, _, None, Some(_))));
        assert_eq!(
            ada.read(),
            Got::Presence("hall".into(), true, name.into(), 2)
        );
        other.send(|w| w.leave("hall", Some(2)));
        assert_eq!(other.read(), Got::Ack(2, Vec::new(), None, None));
        assert_eq!(
            ada.read(),
            Got::Presence("hall".into(), false, name.into(), 1)
        );
        other.send(|w| w.join("hall", None, false));
        assert_eq!(
            ada.read(),
            Got::Presence("hall".into(), true, name.into(), 2)
        );
        other.close();
        assert_eq!(
            ada.read(),
            Got::Presence("hall".into(), false, name.into(), 1)
        );
    }
    ada.close();
    server.shutdown();
}
on_both_drivers!(presence_follows_arrivals_and_departures);

/// With batched deliveries, the room messages a member receives in one
/// turn arrive in one `Batch`: five publishes sent in one batch reach a
/// member in one WebSocket message, in order.
fn deliveries_are_batched_when_enabled(driver: Driver) {
    let server = server(
        driver,
        |b| b.batch_deliveries(true),
        || Protocol::new(router()),
    );
    let mut member = Client::connect(server.addr(), &[]);
    let mut publisher = Client::connect(server.addr(), &[]);
    for client in [&mut member, &mut publisher] {
        client.send(|w| w.join("room", Some(1), false));
        assert!(matches!(client.read(), Got::Ack(1, _, None, Some(_))));
    }
    publisher.send(|w| {
        let mut batch = w.batch();
        for index in 0..5u8 {
            batch.publish("room", &[index], true, None);
        }
        batch.finish()
    });
    let bytes = loop {
        match member.socket.read().unwrap() {
            Message::Binary(bytes) => break bytes,
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    let envelope = envelope::read(&bytes, &VerifyLimits::default()).unwrap();
    assert_eq!(envelope.body_type(), Body::Batch);
    let payloads: Vec<Vec<u8>> = envelope::items(envelope)
        .map(|item| envelope::bytes(item.body_as_message().unwrap().payload()).to_vec())
        .collect();
    assert_eq!(payloads, [[0], [1], [2], [3], [4]]);
    member.close();
    publisher.close();
    server.shutdown();
}
on_both_drivers!(deliveries_are_batched_when_enabled);
