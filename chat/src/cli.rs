//! Command-line flags (clap derive) and their resolution into a start-up plan.
//!
//! The flags' doc comments are the `--help` text, so they use `<PLACEHOLDERS>`.
#![allow(rustdoc::invalid_html_tags)]

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Peer-to-peer chat over echo: a terminal UI, or a line protocol on stdin/stdout.
///
/// Two people on one LAN just run it (`PORT=8080 NAME=alice echo-chat`,
/// `PORT=8081 NAME=bob echo-chat`): they find each other by mDNS. Anywhere else, one
/// of them passes the other's address (shown in the status bar) to `--connect` or
/// `/connect`.
#[derive(Debug, Parser)]
#[command(name = "echo-chat", version, about, long_about = None, after_help = AFTER_HELP)]
pub struct Cli {
    /// A peer to connect to at start, e.g. /ip4/192.168.1.7/tcp/8080/p2p/12D3KooW…
    /// (same as --connect).
    #[arg(value_name = "MULTIADDR")]
    pub peer: Option<String>,

    /// TCP port to listen on, on all IPv4 interfaces (0: any free port); the swarm
    /// transport listens for QUIC on the same UDP port. Ignored when --listen is given.
    #[arg(long, env = "PORT", value_name = "PORT")]
    pub port: Option<u16>,

    /// Your display name when the profile is new (shown to others as name#abcd, the last
    /// 4 characters of your peer id). The profile keeps it: /nick changes it, NAME does
    /// not undo that. Without --profile, NAME also names the profile, so NAME=alice and
    /// NAME=bob are two identities on one machine.
    #[arg(long, env = "NAME", value_name = "NAME")]
    pub name: Option<String>,

    /// The profile to use: one identity (peer id) with its history, in the data dir
    /// profiles/<PROFILE>. Default: NAME, else "default". --data-dir overrides it.
    #[arg(long, env = "ECHO_PROFILE", value_name = "PROFILE")]
    pub profile: Option<String>,

    /// Listen multiaddr, e.g. /ip4/127.0.0.1/tcp/9000 (repeatable). Default:
    /// /ip4/0.0.0.0/tcp/<PORT>.
    #[arg(long = "listen", value_name = "MULTIADDR")]
    pub listen: Vec<String>,

    /// Dial a peer at start (repeatable), e.g. /ip4/10.0.0.7/tcp/8080/p2p/12D3KooW…
    #[arg(long = "connect", value_name = "MULTIADDR")]
    pub connect: Vec<String>,

    /// Room to join and show at start (default: general, or the rooms you were in).
    #[arg(long, value_name = "ROOM")]
    pub room: Option<String>,

    /// Where the identity key, history and logs live. Default: the platform's data
    /// dir, e.g. ~/.local/share/echo-chat/profiles/<NAME or default>.
    #[arg(long, env = "ECHO_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Where downloaded files go (`/get ID [DIR]` picks another). Default: your
    /// Downloads folder, else downloads/ in the data dir. A name is never overwritten:
    /// a second `report.pdf` becomes `report (1).pdf`.
    #[arg(long, env = "ECHO_DOWNLOAD_DIR", value_name = "DIR")]
    pub download_dir: Option<PathBuf>,

    /// Upload limit per peer for the files you serve, in KiB/s (0: the default, 1 GiB/s).
    #[arg(
        long,
        env = "ECHO_UPLOAD_RATE",
        value_name = "KIB_PER_S",
        default_value_t = 0
    )]
    pub upload_rate: u64,
    /// Serve the web UI on this address (default 127.0.0.1:7373; keep it on loopback
    /// unless you know why) and print its URL with a one-time token. The terminal UI
    /// (or headless mode) keeps running beside it; both drive the same node.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:7373")]
    pub web: Option<std::net::SocketAddr>,

    /// With --web: open the page in the default browser.
    #[arg(long, requires = "web")]
    pub open: bool,

    /// Do not ring the terminal bell on a direct message or an @mention of your name.
    #[arg(long)]
    pub no_bell: bool,

    /// Do not discover peers on the LAN by mDNS.
    #[arg(long)]
    pub no_mdns: bool,

    /// Run mDNS on this network interface only (e.g. eth0). Default: every IPv4
    /// interface except loopback.
    #[arg(long, value_name = "IFACE", conflicts_with = "no_mdns")]
    pub mdns_interface: Option<String>,

    /// No terminal UI: commands as lines on stdin, events as lines on stdout. Implied
    /// when stdin or stdout is not a terminal.
    #[arg(long)]
    pub headless: bool,

    /// Headless, with one JSON object per line on stdout (implies --headless).
    #[arg(long)]
    pub json: bool,

    /// Log filter for the log file under the data dir (error, warn, info, debug, trace,
    /// or a tracing filter such as echo_chat=debug).
    #[arg(long, env = "ECHO_LOG", value_name = "FILTER", default_value = "info")]
    pub log_level: String,

    /// Async runtime that drives the node.
    #[arg(long, value_enum, default_value_t = RuntimeKind::Tokio)]
    pub runtime: RuntimeKind,

    /// How the node reaches peers. swarm (the default with tokio): a rust-libp2p swarm,
    /// TCP and QUIC on the same port, with identify, ping, AutoNAT, relays and hole
    /// punching. direct: echo's own driver, TCP only (the only one with --runtime smol).
    /// Both speak the same wire protocol over TCP.
    #[arg(long, value_enum, value_name = "KIND")]
    pub transport: Option<Transport>,

    /// A relay to reserve a slot on (repeatable), e.g.
    /// /ip4/203.0.113.5/tcp/4001/p2p/12D3KooW…: peers then reach you through it at the
    /// …/p2p-circuit/p2p/<you> address shown by /addrs, even behind a NAT; hole
    /// punching then tries to make the link direct. Swarm transport only.
    #[arg(long = "relay", value_name = "MULTIADDR")]
    pub relay: Vec<String>,

    /// Serve as a circuit relay for others (rust-libp2p's limits: 2 minutes and 128 KiB
    /// per circuit, bounded reservations). Only useful on a publicly reachable node: its
    /// listen addresses are taken as public. Swarm transport only.
    #[arg(long)]
    pub relay_server: bool,
}

/// How the node reaches peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// A rust-libp2p swarm (TCP + QUIC, relays, hole punching). tokio only.
    Swarm,
    /// echo's own driver: TCP, noise, yamux.
    Direct,
}

/// Which async runtime runs the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeKind {
    /// tokio, multi-threaded.
    Tokio,
    /// smol (its global executor).
    Smol,
}

const AFTER_HELP: &str = "\
Commands (typed in the input line, or as lines on stdin in headless mode):
  <text>                   send to the current room (or direct conversation)
  /connect <multiaddr>     dial a peer
  /join <room>             join a room (or switch to it)
  /leave [room]            leave the current room (or the named one)
  /nick <name>             change your display name
  /msg <peer> <text>       direct message; peer by name, name#abcd or full peer id
  /send <room> <text>      send to a room without switching to it
  /peers  /rooms  /addrs   list peers, rooms, your own addresses
  /copy [n]                put your address on the clipboard (OSC 52)
  /help                    show help
  /quit                    leave (Ctrl-C, Ctrl-D on an empty line also quit)

Environment: PORT, NAME, ECHO_PROFILE, ECHO_DATA_DIR and ECHO_LOG stand for the flags of
the same name. A profile is one identity: the first start creates its key and takes NAME
as its display name; later starts with the same profile are the same person, whatever
NAME says (/nick renames).
Exit status: 0 after /quit, 1 when start-up fails (bad address, port in use, unusable
data dir), 2 for bad flags.";

impl Cli {
    /// The transport to use: `--transport`, else the swarm on tokio and the direct
    /// driver on smol. `Err` for a combination that cannot run.
    pub fn transport(&self) -> Result<Transport, String> {
        let t = match (self.transport, self.runtime) {
            (Some(Transport::Swarm), RuntimeKind::Smol) => {
                return Err("--transport swarm needs --runtime tokio".into())
            }
            (Some(t), _) => t,
            (None, RuntimeKind::Tokio) => Transport::Swarm,
            (None, RuntimeKind::Smol) => Transport::Direct,
        };
        if t == Transport::Direct && (!self.relay.is_empty() || self.relay_server) {
            return Err("--relay and --relay-server need the swarm transport".into());
        }
        Ok(t)
    }

    /// The listen multiaddrs to use.
    pub fn listen_addrs(&self) -> Vec<String> {
        if self.listen.is_empty() {
            vec![format!("/ip4/0.0.0.0/tcp/{}", self.port.unwrap_or(0))]
        } else {
            self.listen.clone()
        }
    }

    /// Every address to dial at start: the positional one, then `--connect`s.
    pub fn connect_addrs(&self) -> Vec<String> {
        self.peer.iter().chain(&self.connect).cloned().collect()
    }

    /// Where `/get` puts files by default.
    pub fn download_dir(&self) -> PathBuf {
        if let Some(d) = &self.download_dir {
            return d.clone();
        }
        if let Some(d) =
            directories::UserDirs::new().and_then(|u| u.download_dir().map(PathBuf::from))
        {
            return d;
        }
        match directories::ProjectDirs::from("", "", "echo-chat") {
            Some(p) => p.data_dir().join("downloads"),
            None => PathBuf::from("downloads"),
        }
    }

    /// Whether to run without the terminal UI.
    pub fn is_headless(&self) -> bool {
        use std::io::IsTerminal;
        self.headless
            || self.json
            || !std::io::stdin().is_terminal()
            || !std::io::stdout().is_terminal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn positional_and_flags() {
        let c = Cli::try_parse_from([
            "echo-chat",
            "/ip4/1.2.3.4/tcp/1",
            "--connect",
            "/ip4/1.2.3.4/tcp/2",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--runtime",
            "smol",
        ])
        .unwrap();
        assert_eq!(
            c.connect_addrs(),
            vec!["/ip4/1.2.3.4/tcp/1", "/ip4/1.2.3.4/tcp/2"]
        );
        assert_eq!(c.listen_addrs(), vec!["/ip4/127.0.0.1/tcp/0"]);
        assert_eq!(c.runtime, RuntimeKind::Smol);
        assert_eq!(c.transport(), Ok(Transport::Direct));
    }

    #[test]
    fn transport_defaults_to_the_swarm_on_tokio() {
        let parse = |args: &[&str]| {
            let mut v = vec!["echo-chat"];
            v.extend_from_slice(args);
            Cli::try_parse_from(v).unwrap().transport()
        };
        assert_eq!(parse(&[]), Ok(Transport::Swarm));
        assert_eq!(parse(&["--transport", "direct"]), Ok(Transport::Direct));
        let relays = parse(&[
            "--relay",
            "/ip4/1.2.3.4/tcp/1/p2p/x",
            "--relay",
            "/dns4/r/tcp/2",
        ]);
        assert_eq!(relays, Ok(Transport::Swarm));
        assert!(parse(&["--runtime", "smol", "--transport", "swarm"]).is_err());
        assert!(parse(&["--transport", "direct", "--relay-server"]).is_err());
        assert!(parse(&["--runtime", "smol", "--relay", "/ip4/1.2.3.4/tcp/1"]).is_err());
        let c = Cli::try_parse_from(["echo-chat", "--relay", "/a", "--relay", "/b"]).unwrap();
        assert_eq!(c.relay, vec!["/a", "/b"]);
    }
}
