//! The scenarios `compare` runs, as written on its command line: the kind
//! of load and its shape, e.g. `echo:100x32`, `latency:100x32@50%`,
//! `fanout:1000x32/10`, `fanout:10000x32/1000+100`, `storm:1000~200`.

use std::fmt;
use std::str::FromStr;

use anyhow::{Context, bail};

/// One scenario of a comparison.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Scenario {
    /// Closed-loop echo: N connections, one message of S bytes in flight
    /// each. `echo:NxS`, or just `NxS`.
    Echo(Shape),
    /// Open-loop echo at a fixed offered rate, latency percentiles.
    /// `latency:NxS@F%` (a share of the server's echo maximum measured in
    /// the same session) or `latency:NxS@R` (R messages/s).
    Latency(Shape, Offered),
    /// M subscribers over K rooms (one by default), P publishers (one by
    /// default) publishing S-byte messages, shared out over the rooms as
    /// `fanout --publishers` says. `fanout:MxS`, `fanout:MxS/K`,
    /// `fanout:MxS+P` or `fanout:MxS/K+P`.
    Fanout {
        /// Subscribers and payload size.
        shape: Shape,
        /// Rooms the subscribers are spread over.
        rooms: usize,
        /// Publisher connections.
        publishers: usize,
    },
    /// N clients drop and reconnect at once, spread over J ms of jitter.
    /// `storm:N` or `storm:N~J`.
    Storm {
        /// Clients in the storm.
        clients: usize,
        /// Milliseconds the reconnections are spread over (0: all at once).
        jitter_ms: u64,
    },
}

/// Connections (or subscribers) and payload bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Shape {
    /// Connections in total.
    pub(crate) connections: usize,
    /// Payload bytes per message.
    pub(crate) size: usize,
}

/// The load a latency scenario offers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Offered {
    /// A share (0 to 1) of the server's echo maximum at the same shape.
    Share(f64),
    /// Messages per second.
    Rate(f64),
}

impl Scenario {
    /// The echo maxima of ANCHORS.md's four shapes, then latency at a
    /// quarter, half and three quarters of each server's maximum at 100 ×
    /// 32 B, then a reconnection storm of 1000 clients.
    pub(crate) fn defaults() -> Vec<Scenario> {
        let shapes = [
            Shape::new(100, 32),
            Shape::new(100, 1024),
            Shape::new(1000, 32),
            Shape::new(1000, 1024),
        ];
        let mut scenarios: Vec<Scenario> = shapes.into_iter().map(Scenario::Echo).collect();
        for share in [0.25, 0.5, 0.75] {
            scenarios.push(Scenario::Latency(shapes[0], Offered::Share(share)));
        }
        scenarios.push(Scenario::Storm {
            clients: 1000,
            jitter_ms: 0,
        });
        scenarios
    }

    /// The kind, as recorded: `echo`, `latency`, `fanout` or `storm`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Scenario::Echo(_) => "echo",
            Scenario::Latency(..) => "latency",
            Scenario::Fanout { .. } => "fanout",
            Scenario::Storm { .. } => "storm",
        }
    }

    /// The human label runs of this scenario group under, e.g.
    /// `100 × 32 B at 50% of max`.
    pub(crate) fn label(&self) -> String {
        match self {
            Scenario::Echo(shape) => shape.to_string(),
            Scenario::Latency(shape, Offered::Share(share)) => {
                format!("{shape} at {:.0}% of max", share * 100.0)
            }
            Scenario::Latency(shape, Offered::Rate(rate)) => format!("{shape} at {rate:.0}/s"),
            Scenario::Fanout {
                shape,
                rooms,
                publishers,
            } => {
                let rooms = match rooms {
                    1 => "1 room".to_owned(),
                    rooms => format!("{rooms} rooms"),
                };
                // One publisher, the common case, goes unsaid: the labels
                // of the runs from before publishers were counted stay.
                let publishers = match publishers {
                    1 => String::new(),
                    publishers => format!(", {publishers} publishers"),
                };
                format!(
                    "{} subscribers × {}, {rooms}{publishers}",
                    shape.connections,
                    size_text(shape.size)
                )
            }
            Scenario::Storm {
                clients,
                jitter_ms: 0,
            } => format!("{clients} clients at once"),
            Scenario::Storm { clients, jitter_ms } => {
                format!("{clients} clients over {jitter_ms} ms")
            }
        }
    }
}

impl Shape {
    /// `connections` connections of `size`-byte messages.
    pub(crate) const fn new(connections: usize, size: usize) -> Shape {
        Shape { connections, size }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} × {}", self.connections, size_text(self.size))
    }
}

/// `32 B`, `1 KiB`, `2 MiB`.
pub(crate) fn size_text(size: usize) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

impl FromStr for Shape {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Shape> {
        let Some((connections, size)) = text.split_once('x') else {
            bail!("expected CONNECTIONSxSIZE, got {text:?}");
        };
        let connections: usize = positive(connections, "a connection count")?;
        let (digits, unit) = match size.strip_suffix("KiB") {
            Some(digits) => (digits, 1 << 10),
            None => match size.strip_suffix("MiB") {
                Some(digits) => (digits, 1 << 20),
                None => (size.strip_suffix('B').unwrap_or(size), 1),
            },
        };
        let size = digits
            .parse::<usize>()
            .with_context(|| format!("{size:?} is not a size"))?
            * unit;
        Ok(Shape::new(connections, size))
    }
}

impl FromStr for Scenario {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Scenario> {
        let (kind, rest) = text.split_once(':').unwrap_or(("echo", text));
        match kind {
            "echo" => Ok(Scenario::Echo(rest.parse()?)),
            "latency" => {
                let (shape, offered) = rest.split_once('@').with_context(|| {
                    format!("expected latency:NxS@SHARE% or @RATE, got {text:?}")
                })?;
                let offered = match offered.strip_suffix('%') {
                    Some(percent) => {
                        let percent: f64 = percent
                            .parse()
                            .with_context(|| format!("{percent:?} is not a percentage"))?;
                        if !(percent > 0.0 && percent <= 100.0) {
                            bail!("a share of the maximum is above 0% and at most 100%");
                        }
                        Offered::Share(percent / 100.0)
                    }
                    None => Offered::Rate(positive::<u64>(offered, "a rate")? as f64),
                };
                Ok(Scenario::Latency(shape.parse()?, offered))
            }
            "fanout" => {
                let (rest, publishers) = match rest.split_once('+') {
                    Some((rest, publishers)) => (rest, positive(publishers, "a publisher count")?),
                    None => (rest, 1),
                };
                let (shape, rooms) = match rest.split_once('/') {
                    Some((shape, rooms)) => (shape, positive(rooms, "a room count")?),
                    None => (rest, 1),
                };
                let shape: Shape = shape.parse()?;
                if rooms > shape.connections {
                    bail!("more rooms than subscribers in {text:?}");
                }
                Ok(Scenario::Fanout {
                    shape,
                    rooms,
                    publishers,
                })
            }
            "storm" => {
                let (clients, jitter_ms) = match rest.split_once('~') {
                    Some((clients, jitter)) => (
                        clients,
                        jitter
                            .strip_suffix("ms")
                            .unwrap_or(jitter)
                            .parse()
                            .with_context(|| format!("{jitter:?} is not milliseconds"))?,
                    ),
                    None => (rest, 0),
                };
                Ok(Scenario::Storm {
                    clients: positive(clients, "a client count")?,
                    jitter_ms,
                })
            }
            other => bail!("unknown scenario kind {other:?}: echo, latency, fanout or storm"),
        }
    }
}

/// Parses a number above zero, naming `what` it should be on failure.
fn positive<T>(text: &str, what: &str) -> anyhow::Result<T>
where
    T: FromStr + PartialOrd + Default,
{
    match text.parse::<T>() {
        Ok(value) if value > T::default() => Ok(value),
        _ => bail!("{text:?} is not {what} above zero"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_counts_and_sizes() {
        assert_eq!("100x32".parse::<Shape>().unwrap(), Shape::new(100, 32));
        assert_eq!(
            "1000x1KiB".parse::<Shape>().unwrap(),
            Shape::new(1000, 1024)
        );
        assert_eq!("10x64B".parse::<Shape>().unwrap(), Shape::new(10, 64));
        assert_eq!("1x2MiB".parse::<Shape>().unwrap(), Shape::new(1, 2 << 20));
        for bad in ["100", "x32", "0x32", "100x", "100xKiB", "ax32"] {
            assert!(bad.parse::<Shape>().is_err(), "{bad:?} was accepted");
        }
        assert_eq!(Shape::new(1000, 1024).to_string(), "1000 × 1 KiB");
    }

    #[test]
    fn every_kind_parses_with_its_options() {
        let shape = Shape::new(100, 32);
        assert_eq!("100x32".parse::<Scenario>().unwrap(), Scenario::Echo(shape));
        assert_eq!(
            "echo:100x32".parse::<Scenario>().unwrap(),
            Scenario::Echo(shape)
        );
        assert_eq!(
            "latency:100x32@50%".parse::<Scenario>().unwrap(),
            Scenario::Latency(shape, Offered::Share(0.5))
        );
        assert_eq!(
            "latency:100x32@40000".parse::<Scenario>().unwrap(),
            Scenario::Latency(shape, Offered::Rate(40000.0))
        );
        let fanout = |rooms, publishers| Scenario::Fanout {
            shape,
            rooms,
            publishers,
        };
        assert_eq!("fanout:100x32".parse::<Scenario>().unwrap(), fanout(1, 1));
        assert_eq!(
            "fanout:100x32/10".parse::<Scenario>().unwrap(),
            fanout(10, 1)
        );
        assert_eq!("fanout:100x32+4".parse::<Scenario>().unwrap(), fanout(1, 4));
        assert_eq!(
            "fanout:100x32/10+4".parse::<Scenario>().unwrap(),
            fanout(10, 4)
        );
        assert_eq!(
            "storm:1000~200ms".parse::<Scenario>().unwrap(),
            Scenario::Storm {
                clients: 1000,
                jitter_ms: 200
            }
        );
        for bad in [
            "latency:100x32",
            "latency:100x32@0%",
            "latency:100x32@150%",
            "latency:100x32@0",
            "fanout:10x32/11",
            "fanout:10x32/0",
            "fanout:10x32/2+0",
            "fanout:10x32+x",
            "fanout:10x32+2/2",
            "storm:0",
            "storm:10~x",
            "flood:10",
        ] {
            assert!(bad.parse::<Scenario>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn labels_name_the_load() {
        let shape = Shape::new(100, 32);
        assert_eq!(
            Scenario::Latency(shape, Offered::Share(0.5)).label(),
            "100 × 32 B at 50% of max"
        );
        let fanout = |rooms, publishers| Scenario::Fanout {
            shape,
            rooms,
            publishers,
        };
        assert_eq!(fanout(1, 1).label(), "100 subscribers × 32 B, 1 room");
        assert_eq!(fanout(10, 1).label(), "100 subscribers × 32 B, 10 rooms");
        assert_eq!(
            fanout(10, 100).label(),
            "100 subscribers × 32 B, 10 rooms, 100 publishers"
        );
        assert_eq!(
            Scenario::Storm {
                clients: 1000,
                jitter_ms: 0
            }
            .label(),
            "1000 clients at once"
        );
        assert_eq!(Scenario::defaults().len(), 8);
    }
}
