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

    /// TCP port to listen on, on all IPv4 interfaces (0: any free port). Ignored when
    /// --listen is given.
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

    /// Upload limit per peer for the files you serve, in KiB/s (0: the default, 64 MiB/s).
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
    }
}
