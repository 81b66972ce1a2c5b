//! Sessions and resume on `shardcast.v1`, end to end over 4 shards with
//! tungstenite clients: a client whose link drops resumes on another
//! shard (or while its old connection still looks open) and receives every
//! message it missed, then the live ones, each once and in order, with its
//! application state; a gap past the history or a changed epoch is said
//! per room; a forged, stale or expired token is refused and the
//! connection keeps a fresh session.

mod common;

use std::net::{Shutdown, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use common::v1_client::{Client, Got, server};
use common::{Driver, on_both_drivers};
use shardcast::v1::{ErrorCode, Protocol, Router, SESSION_RESUMED_ELSEWHERE};
use shardcast_proto::envelope::ResumePoint;

/// Events that show where a connection is and what its state holds.
fn protocol() -> Protocol<u32> {
    let router = Router::<u32>::new()
        .on("count", |conn, _payload| {
            let count = conn.state_mut().state_mut();
            *count += 1;
            Ok(count.to_string().into_bytes())
        })
        .on("shard", |conn, _payload| {
            Ok(conn.id().shard().index().to_string().into_bytes())
        })
        .on("owner", |conn, payload| {
            let room = std::str::from_utf8(payload).unwrap();
            Ok(conn.hub().owner_of(room).index().to_string().into_bytes())
        });
    Protocol::new(router)
}

/// The answer to event `name` with `payload`.
fn ask(client: &mut Client, name: &str, payload: &[u8]) -> Vec<u8> {
    client.send(|w| w.event(name, payload, Some(900)));
    match client.read() {
        Got::Ack(900, answer, None, None) => answer,
        other => panic!("not the answer to {name}: {other:?}"),
    }
}

/// A client served by none of the shards `avoid`.
fn connect_elsewhere(addr: SocketAddr, avoid: &[Vec<u8>]) -> Client {
    for _ in 0..200 {
        let mut client = Client::connect(addr, &[]);
        if !avoid.contains(&ask(&mut client, "shard", b"")) {
            return client;
        }
        client.close();
    }
    panic!("every connection landed on shards {avoid:?}");
}

fn join(client: &mut Client, room: &str, ack: u64) -> u64 {
    client.send(|w| w.join(room, Some(ack), false));
    match client.read() {
        Got::Ack(id, _, None, Some(offset)) if id == ack => offset,
        other => panic!("not the join's ack: {other:?}"),
    }
}

/// Publishes `payloads` to `room` from a member that excludes itself,
/// each acknowledged before the next, so offsets follow the payloads.
fn publish_all(publisher: &mut Client, room: &str, payloads: impl Iterator<Item = u64>) {
    for n in payloads {
        let payload = n.to_string();
        publisher.send(|w| w.publish(room, payload.as_bytes(), true, Some(n)));
        match publisher.read() {
            Got::Ack(id, _, None, Some(_)) if id == n => {}
            other => panic!("not publish {n}'s ack: {other:?}"),
        }
    }
}

/// Reads messages of `room` at offsets `from..=to`, each once, in order,
/// carrying its offset as payload.
fn expect_messages(client: &mut Client, room: &str, from: u64, to: u64) {
    for offset in from..=to {
        assert_eq!(
            client.read(),
            Got::Message(room.into(), offset, offset.to_string().into_bytes(), None),
            "message {offset} of {from}..={to}"
        );
    }
}

/// Drops the link without a close frame, as a network failure does.
fn cut(client: Client) {
    client.socket.get_ref().shutdown(Shutdown::Both).unwrap();
}

on_both_drivers!(a_client_that_lost_its_link_resumes_on_another_shard_and_misses_nothing);
fn a_client_that_lost_its_link_resumes_on_another_shard_and_misses_nothing(driver: Driver) {
    let server = server(driver, |b| b, protocol);
    let addr = server.addr();
    let mut publisher = Client::connect(addr, &[]);
    join(&mut publisher, "r", 1);
    let mut member = Client::connect(addr, &[]);
    assert_eq!(join(&mut member, "r", 1), 0);
    for expected in ["1", "2"] {
        member.send(|w| w.event("count", b"", Some(2)));
        assert_eq!(
            member.read(),
            Got::Ack(2, expected.as_bytes().to_vec(), None, None)
        );
    }
    publish_all(&mut publisher, "r", 1..=5);
    expect_messages(&mut member, "r", 1, 5);
    // The new connection is on neither the old one's shard nor the room
    // owner's: the session and the history both cross shards.
    let avoid = [
        ask(&mut member, "shard", b""),
        ask(&mut member, "owner", b"r"),
    ];
    let (session, epoch) = (member.session.clone(), member.epoch);
    cut(member);
    publish_all(&mut publisher, "r", 6..=20);

    // More is published while the client resumes: the seam between the
    // replayed messages and the live ones must hold.
    let live = thread::spawn(move || {
        publish_all(&mut publisher, "r", 21..=120);
        publisher
    });
    let mut member = connect_elsewhere(addr, &avoid);
    member.resume(&session, &[("r", 5, epoch)]);
    let Got::Welcome(true, rooms) = member.read() else {
        panic!("not a resumed Welcome");
    };
    let [(room, None, joined)] = &rooms[..] else {
        panic!("one room recovered: {rooms:?}");
    };
    assert_eq!(room, "r");
    assert!((20..=120).contains(joined), "joined at {joined}");
    assert_ne!(member.session.1, session.1, "a new token");
    assert_eq!(member.session.0, session.0, "the same session");
    expect_messages(&mut member, "r", 6, 120);
    let mut publisher = live.join().unwrap();
    publish_all(&mut publisher, "r", 121..=125);
    expect_messages(&mut member, "r", 121, 125);
    // The application's state came along.
    member.send(|w| w.event("count", b"", Some(3)));
    assert_eq!(member.read(), Got::Ack(3, b"3".to_vec(), None, None));
    member.close();
    publisher.close();
    server.shutdown();
}

on_both_drivers!(a_resume_takes_the_session_from_a_connection_that_still_looks_open);
fn a_resume_takes_the_session_from_a_connection_that_still_looks_open(driver: Driver) {
    let server = server(driver, |b| b, protocol);
    let addr = server.addr();
    let mut publisher = Client::connect(addr, &[]);
    join(&mut publisher, "r", 1);
    let mut old = Client::connect(addr, &[]);
    join(&mut old, "r", 1);
    publish_all(&mut publisher, "r", 1..=3);
    expect_messages(&mut old, "r", 1, 3);
    let mut new = Client::connect(addr, &[]);
    // A room request while the resume runs is refused, not raced.
    let (id, token) = old.session.clone();
    let point = ResumePoint {
        room: "r",
        offset: 3,
        epoch: old.epoch,
    };
    new.send(|w| {
        let mut batch = w.batch();
        batch
            .resume(&id, &token, &[point])
            .join("x", Some(7), false);
        batch.finish()
    });
    assert_eq!(
        new.read(),
        Got::Ack(7, Vec::new(), Some(ErrorCode::BadRequest), None)
    );
    assert_eq!(new.read(), Got::Welcome(true, vec![("r".into(), None, 3)]));
    assert_eq!(old.close_code(), Some(SESSION_RESUMED_ELSEWHERE.0));
    publish_all(&mut publisher, "r", 4..=6);
    expect_messages(&mut new, "r", 4, 6);
    new.close();
    publisher.close();
    server.shutdown();
}

on_both_drivers!(a_gap_past_the_history_or_a_changed_epoch_is_said_per_room);
fn a_gap_past_the_history_or_a_changed_epoch_is_said_per_room(driver: Driver) {
    let server = server(driver, |b| b.room_history(4, None), protocol);
    let addr = server.addr();
    let mut publisher = Client::connect(addr, &[]);
    join(&mut publisher, "r", 1);
    let mut member = Client::connect(addr, &[]);
    join(&mut member, "r", 1);
    join(&mut member, "s", 2);
    publish_all(&mut publisher, "r", 1..=1);
    expect_messages(&mut member, "r", 1, 1);
    let (session, epoch) = (member.session.clone(), member.epoch);
    cut(member);
    publish_all(&mut publisher, "r", 2..=10);
    let mut member = Client::connect(addr, &[]);
    member.resume(&session, &[("r", 1, epoch), ("s", 0, 12_345)]);
    let Got::Welcome(true, mut rooms) = member.read() else {
        panic!("not a resumed Welcome");
    };
    rooms.sort();
    assert_eq!(
        rooms,
        [
            ("r".into(), Some(ErrorCode::GapTooLarge), 10),
            ("s".into(), Some(ErrorCode::EpochChanged), 0),
        ]
    );
    // Live from the position given.
    publish_all(&mut publisher, "r", 11..=12);
    expect_messages(&mut member, "r", 11, 12);
    member.close();
    publisher.close();
    server.shutdown();
}

on_both_drivers!(forged_stale_and_expired_tokens_are_refused_and_a_fresh_session_stays);
fn forged_stale_and_expired_tokens_are_refused_and_a_fresh_session_stays(driver: Driver) {
    let server = server(
        driver,
        |b| b,
        || protocol().session_timeout(Some(Duration::from_secs(1))),
    );
    let addr = server.addr();
    let first = Client::connect(addr, &[]);
    let session = first.session.clone();
    cut(first);

    let mut forged = session.clone();
    let last = forged.1.len() - 1;
    forged.1[last] ^= 1;
    let mut client = Client::connect(addr, &[]);
    client.resume(&forged, &[]);
    assert_eq!(client.read(), Got::Error(ErrorCode::RecoveryFailed, None));
    // The connection keeps the fresh session of its first Welcome.
    assert_eq!(join(&mut client, "r", 1), 0);
    // A resume comes before any join.
    client.resume(&session, &[]);
    assert_eq!(client.read(), Got::Error(ErrorCode::BadRequest, None));
    client.close();

    let mut resumed = Client::connect(addr, &[]);
    resumed.resume(&session, &[]);
    assert_eq!(resumed.read(), Got::Welcome(true, Vec::new()));
    let mut stale = Client::connect(addr, &[]);
    stale.resume(&session, &[]);
    assert_eq!(
        stale.read(),
        Got::Error(ErrorCode::RecoveryFailed, None),
        "a token is good for one resume"
    );
    stale.close();

    let renewed = resumed.session.clone();
    cut(resumed);
    thread::sleep(Duration::from_millis(1500));
    let mut late = Client::connect(addr, &[]);
    late.resume(&renewed, &[]);
    assert_eq!(
        late.read(),
        Got::Error(ErrorCode::RecoveryFailed, None),
        "the session timed out"
    );
    late.close();
    server.shutdown();
}

on_both_drivers!(a_client_that_closes_normally_ends_its_session);
fn a_client_that_closes_normally_ends_its_session(driver: Driver) {
    let server = server(driver, |b| b, protocol);
    let addr = server.addr();
    let first = Client::connect(addr, &[]);
    let session = first.session.clone();
    first.close();
    let mut again = Client::connect(addr, &[]);
    again.resume(&session, &[]);
    assert_eq!(again.read(), Got::Error(ErrorCode::RecoveryFailed, None));
    again.close();
    server.shutdown();
}

on_both_drivers!(a_silent_client_is_closed_by_heartbeat_and_its_session_resumes);
fn a_silent_client_is_closed_by_heartbeat_and_its_session_resumes(driver: Driver) {
    let second = Duration::from_secs(1);
    let server = server(
        driver,
        |b| b.idle_timeout(None).heartbeat(Some((second, second))),
        protocol,
    );
    let addr = server.addr();
    let mut silent = Client::connect(addr, &[]);
    assert_eq!(silent.heartbeat_ms, 1000, "the Welcome names the interval");
    join(&mut silent, "r", 1);
    let (session, epoch) = (silent.session.clone(), silent.epoch);
    // The client stops reading, so it answers no ping: the server must
    // find the link dead within interval + timeout (+ its 1 s sweep).
    let started = Instant::now();
    thread::sleep(Duration::from_millis(3500));
    let mut publisher = Client::connect(addr, &[]);
    join(&mut publisher, "r", 1);
    publish_all(&mut publisher, "r", 1..=3);
    assert_eq!(silent.close_code(), Some(1001), "closed by the heartbeat");
    assert!(started.elapsed() < Duration::from_secs(5));
    let mut back = Client::connect(addr, &[]);
    back.resume(&session, &[("r", 0, epoch)]);
    assert_eq!(back.read(), Got::Welcome(true, vec![("r".into(), None, 3)]));
    expect_messages(&mut back, "r", 1, 3);
    back.close();
    publisher.close();
    server.shutdown();
}
