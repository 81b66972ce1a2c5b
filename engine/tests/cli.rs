//! The `shardcast` binary as operators run it: its configuration layers
//! seen through `--print-config`, its errors for bad config files, and
//! `serve --echo` from a config file answering a WebSocket client, and the
//! default application's rooms, events and diagnostic events.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::Message;

/// A file in this test target's temporary directory.
fn temp_file(name: &str, text: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}"));
    fs::write(&path, text).unwrap();
    path
}

/// The binary, with none of the caller's configuration variables.
fn shardcast() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shardcast"));
    for (name, _) in std::env::vars_os() {
        if name
            .to_str()
            .is_some_and(|name| name.starts_with("SHARDCAST_"))
        {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG");
    command
}

fn run(command: &mut Command) -> Output {
    command.stdin(Stdio::null()).output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn print_config_shows_each_layer_over_the_one_below() {
    let config = temp_file(
        "layers.toml",
        "[server]\nbacklog = 100\n\
         [limits]\nmax_connections = 5000\n\
         [timeouts]\nidle = \"30s\"\nclose = \"1s\"\n",
    );
    let output = run(shardcast()
        .args(["serve", "--print-config", "--backlog", "300"])
        .arg("--config")
        .arg(&config)
        .env("SHARDCAST_SERVER_BACKLOG", "200")
        .env("SHARDCAST_TIMEOUTS_IDLE", "off"));
    assert!(output.status.success(), "{}", stderr(&output));
    let printed: toml::Table = String::from_utf8(output.stdout).unwrap().parse().unwrap();
    let get = |table: &str, key: &str| printed[table][key].to_string();
    assert_eq!(get("server", "backlog"), "300", "flag over variable");
    assert_eq!(get("timeouts", "idle"), "\"off\"", "variable over file");
    assert_eq!(get("timeouts", "close"), "\"1s\"", "file over defaults");
    assert_eq!(
        get("limits", "max_connections"),
        "5000",
        "file over defaults"
    );
    assert_eq!(get("timeouts", "handshake"), "\"10s\"", "defaults");
    assert_eq!(get("server", "listen"), "[\"127.0.0.1:8080\"]", "defaults");
}

#[test]
fn the_config_file_may_come_from_shardcast_config() {
    let config = temp_file("from-env.toml", "[compression]\nlevel = 9\n");
    let output = run(shardcast()
        .args(["serve", "--print-config"])
        .env("SHARDCAST_CONFIG", &config));
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(printed.contains("\nlevel = 9\n"), "{printed}");
}

#[test]
fn a_bad_config_file_exits_non_zero_naming_the_key() {
    let config = temp_file("bad-value.toml", "[limits]\nmax_frame_size = \"64MB\"\n");
    let output = run(shardcast()
        .args(["serve", "--echo", "--config"])
        .arg(&config));
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains(&config.display().to_string()), "{message}");
    assert!(
        message.contains("`limits.max_frame_size` = \"64MB\""),
        "{message}"
    );

    let config = temp_file("unknown-key.toml", "[limits]\nmax_conections = 10\n");
    let output = run(shardcast()
        .args(["serve", "--echo", "--config"])
        .arg(&config));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("unknown key `limits.max_conections`"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_unknown_variable_exits_non_zero_naming_it() {
    let output = run(shardcast()
        .args(["serve", "--echo"])
        .env("SHARDCAST_LIMITS_MAX_CONECTIONS", "10"));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("unknown environment variable SHARDCAST_LIMITS_MAX_CONECTIONS"),
        "{}",
        stderr(&output)
    );
}

/// A running server process, killed if the test ends without stopping it.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Connects to `addr`, retrying while the server starts.
fn connect(addr: SocketAddr, server: &mut Running) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(stream) = TcpStream::connect(addr) {
            return stream;
        }
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("the server exited with {status}:\n{}", server.log());
        }
        assert!(Instant::now() < deadline, "no listener:\n{}", server.log());
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_echo_listens_where_the_config_file_says_and_stops_on_sigterm() {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = temp_file(
        "serve.toml",
        &format!(
            "[server]\nlisten = [\"{addr}\"]\nshards = 1\npin_cores = false\n\
             [timeouts]\nshutdown = \"2s\"\n"
        ),
    );
    let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-serve.log");
    let child = shardcast()
        .args(["serve", "--echo", "--config"])
        .arg(&config)
        .env("SHARDCAST_LOG_LEVEL", "info")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Running { child, log };

    let stream = connect(addr, &mut server);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut socket, _) = tungstenite::client(format!("ws://{addr}/"), stream).unwrap();
    socket
        .send(Message::text("hello from a config file"))
        .unwrap();
    assert_eq!(
        socket.read().unwrap(),
        Message::text("hello from a config file")
    );
    socket.close(None).unwrap();

    let killed = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running:\n{}",
            server.log()
        );
        thread::sleep(Duration::from_millis(50));
    };
    let log = server.log();
    assert!(status.success(), "{status}:\n{log}");
    assert!(log.contains("open file limit"), "{log}");
    assert!(log.contains("shutdown complete"), "{log}");
}

/// A `shardcast serve --shards 2` with the default application, logging
/// to `log_name` in the test target's temporary directory.
fn serve_rooms(log_name: &str) -> (SocketAddr, Running) {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(log_name);
    let child = shardcast()
        .args(["serve", "--shards", "2", "--listen"])
        .arg(addr.to_string())
        .env("SHARDCAST_SERVER_PIN_CORES", "false")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (addr, Running { child, log })
}

/// A client of `addr` that offers shardcast.v1, which the server accepts.
fn open_v1(addr: SocketAddr, server: &mut Running) -> tungstenite::WebSocket<TcpStream> {
    use shardcast_proto::envelope::{self, SUBPROTOCOL, VerifyLimits};
    use tungstenite::client::IntoClientRequest;

    let stream = connect(addr, server);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!("ws://{addr}/").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", SUBPROTOCOL.parse().unwrap());
    let (mut socket, response) = tungstenite::client(request, stream).unwrap();
    assert_eq!(
        response.headers()["Sec-WebSocket-Protocol"],
        SUBPROTOCOL,
        "the server speaks shardcast.v1"
    );
    let welcome = read_binary(&mut socket);
    let welcome = envelope::read(&welcome, &VerifyLimits::default()).unwrap();
    let welcome = welcome.body_as_welcome().expect("a Welcome first");
    assert!(!welcome.resumed());
    assert_eq!(welcome.session_id().len(), 32);
    assert_eq!(welcome.heartbeat_ms(), 30_000, "the default ping interval");
    socket
}

/// The next binary message `socket` receives.
fn read_binary(socket: &mut tungstenite::WebSocket<TcpStream>) -> Vec<u8> {
    loop {
        if let Message::Binary(bytes) = socket.read().unwrap() {
            return bytes.to_vec();
        }
    }
}

/// `serve` without `--echo` serves rooms to shardcast.v1 clients (two
/// clients on two shards: join, publish, the member receives the message
/// with its position; the `echo` event answers) and echoes raw clients.
#[test]
fn serve_defaults_to_shardcast_v1_rooms_and_echoes_raw_clients() {
    use shardcast_proto::envelope::{self, Body, EnvelopeWriter, VerifyLimits};

    let (addr, mut server) = serve_rooms("cli-serve-rooms.log");
    let mut writer = EnvelopeWriter::new();
    let mut member = open_v1(addr, &mut server);
    let mut publisher = open_v1(addr, &mut server);
    for (socket, ack) in [(&mut member, 1), (&mut publisher, 2)] {
        socket
            .send(Message::binary(
                writer.join("lobby", Some(ack), false).to_vec(),
            ))
            .unwrap();
        let answer = read_binary(socket);
        let answer = envelope::read(&answer, &VerifyLimits::default()).unwrap();
        let ack_body = answer.body_as_ack().expect("an ack");
        assert_eq!(ack_body.id(), ack);
        assert_eq!(ack_body.error(), None);
    }
    publisher
        .send(Message::binary(
            writer.publish("lobby", b"hi", true, Some(3)).to_vec(),
        ))
        .unwrap();
    let answer = read_binary(&mut publisher);
    let answer = envelope::read(&answer, &VerifyLimits::default()).unwrap();
    assert_eq!(
        answer.body_as_ack().unwrap().position().unwrap().offset(),
        1
    );
    let delivered = read_binary(&mut member);
    let delivered = envelope::read(&delivered, &VerifyLimits::default()).unwrap();
    assert_eq!(delivered.body_type(), Body::Message);
    let message = delivered.body_as_message().unwrap();
    assert_eq!((message.room(), message.position().offset()), ("lobby", 1));
    assert_eq!(envelope::bytes(message.payload()), b"hi");
    member
        .send(Message::binary(
            writer.event("echo", b"ping", Some(4)).to_vec(),
        ))
        .unwrap();
    let answer = read_binary(&mut member);
    let answer = envelope::read(&answer, &VerifyLimits::default()).unwrap();
    assert_eq!(
        envelope::bytes(answer.body_as_ack().unwrap().payload()),
        b"ping"
    );

    let stream = connect(addr, &mut server);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut raw, _) = tungstenite::client(format!("ws://{addr}/"), stream).unwrap();
    raw.send(Message::text("raw")).unwrap();
    assert_eq!(raw.read().unwrap(), Message::text("raw"));
}

/// The default application's diagnostic events: `shardcast.shard` answers
/// the connection's shard (connections land on both of two shards), and
/// `shardcast.owner` the owner shard of the room named by its payload
/// (FNV-1a of the name modulo the shard count), both in ASCII decimal; a
/// room name that is not UTF-8 is a bad request.
#[test]
fn serve_answers_the_shard_of_a_connection_and_the_owner_of_a_room() {
    use shardcast_proto::envelope::{self, EnvelopeWriter, ErrorCode, VerifyLimits};

    let (addr, mut server) = serve_rooms("cli-serve-diagnostics.log");
    let mut writer = EnvelopeWriter::new();
    let mut ask = |socket: &mut tungstenite::WebSocket<TcpStream>, event: &str, payload: &[u8]| {
        socket
            .send(Message::binary(
                writer.event(event, payload, Some(7)).to_vec(),
            ))
            .unwrap();
        let answer = read_binary(socket);
        let answer = envelope::read(&answer, &VerifyLimits::default()).unwrap();
        let ack = answer.body_as_ack().expect("an ack");
        assert_eq!(ack.id(), 7);
        match ack.error() {
            None => Ok(String::from_utf8(envelope::bytes(ack.payload()).to_vec()).unwrap()),
            Some(code) => Err(code),
        }
    };
    // SO_REUSEPORT spreads connections by their addresses: among 64, both
    // shards serve some.
    let mut sockets = Vec::new();
    let mut shards = Vec::new();
    while sockets.len() < 64 && !(shards.contains(&0) && shards.contains(&1)) {
        let mut socket = open_v1(addr, &mut server);
        let shard: usize = ask(&mut socket, "shardcast.shard", b"")
            .unwrap()
            .parse()
            .unwrap();
        assert!(shard < 2, "shard {shard} of 2");
        shards.push(shard);
        sockets.push(socket);
    }
    assert!(shards.contains(&0) && shards.contains(&1), "{shards:?}");

    let fnv1a = |room: &str| {
        room.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        }) % 2
    };
    let socket = &mut sockets[0];
    let mut owners = Vec::new();
    for index in 0..8 {
        let room = format!("room-{index}");
        let owner = ask(socket, "shardcast.owner", room.as_bytes()).unwrap();
        assert_eq!(owner, fnv1a(&room).to_string(), "{room}");
        owners.push(owner);
    }
    assert!(owners.iter().any(|owner| owner == "0") && owners.iter().any(|owner| owner == "1"));
    assert_eq!(
        ask(socket, "shardcast.owner", &[0xff, 0xfe]),
        Err(ErrorCode::BadRequest)
    );
}
