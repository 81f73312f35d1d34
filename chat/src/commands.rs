//! The chat commands, as typed in the input line or on stdin.

/// A parsed input line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Plain text for the current room or conversation.
    Say(String),
    /// `/connect <multiaddr>`.
    Connect(String),
    /// `/join <room>`.
    Join(String),
    /// `/leave [room]`.
    Leave(Option<String>),
    /// `/nick <name>`.
    Nick(String),
    /// `/msg <peer> <text>`.
    Msg { peer: String, text: String },
    /// `/send <room> <text>`.
    Send { room: String, text: String },
    /// `/peers`.
    Peers,
    /// `/rooms`.
    Rooms,
    /// `/addrs`.
    Addrs,
    /// `/copy [n]`: our best address (or the `n`th of `/addrs`) to the clipboard.
    Copy(Option<usize>),
    /// `/share <path> [@peer|#room]`: offer a file to the current room (or to one peer,
    /// or another room); `to` keeps its `@` or `#`.
    Share { path: String, to: Option<String> },
    /// `/get <id> [dir]`: download an offered file.
    Get { id: String, dir: Option<String> },
    /// `/files`: offers seen and transfers.
    Files,
    /// `/cancel <id>`: stop a download.
    Cancel(String),
    /// `/state`: everything a fresh UI needs (rooms, peers, who we are), as one event.
    State,
    /// `/history <room> [lamport:seq:author] [n]`: stored messages of a room before a
    /// point (or the newest), for scrolling back.
    History {
        room: String,
        before: Option<String>,
        limit: Option<usize>,
    },
    /// `/read <peer>`: the conversation with a peer is read (clears its unread count,
    /// sends the read receipt once).
    Read(String),
    /// `/help`.
    Help,
    /// `/quit`.
    Quit,
}

/// One line of help per command.
pub const HELP: &[(&str, &str)] = &[
    ("<text>", "send to the current room or conversation"),
    (
        "/connect <multiaddr>",
        "dial a peer (its address ends in /p2p/<id>)",
    ),
    ("/join <room>", "join a room, or switch to it"),
    ("/leave [room]", "leave the current (or named) room"),
    ("/nick <name>", "change your display name"),
    (
        "/msg <peer> <text>",
        "direct message; peer by name, name#abcd or peer id",
    ),
    ("/send <room> <text>", "send to a room without switching"),
    ("/peers", "list peers with their status and round-trip time"),
    ("/rooms", "list your rooms"),
    ("/addrs", "show your addresses, to give to a friend"),
    (
        "/copy [n]",
        "put your address (or the n-th of /addrs) on the clipboard",
    ),
    (
        "/share <path> [@peer|#room]",
        "offer a file to the room (or a peer, a room)",
    ),
    (
        "/get <id> [dir]",
        "download an offered file (to the download dir)",
    ),
    ("/files", "list file offers and downloads"),
    ("/cancel <id>", "stop a download"),
    ("/state", "(for UIs) rooms, peers and who you are"),
    (
        "/history <room> [key] [n]",
        "(for UIs) stored messages before a point",
    ),
    (
        "/read <peer>",
        "(for UIs) mark a direct conversation read; /history @peer shows it",
    ),
    ("/help", "this help"),
    ("/quit", "leave (also Ctrl-C)"),
];

/// Parses a line. `Ok(None)`: nothing to do (blank line).
pub fn parse(line: &str) -> Result<Option<Command>, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Ok(None);
    }
    // "//text" sends "/text".
    if let Some(rest) = line.strip_prefix("//") {
        return Ok(Some(Command::Say(format!("/{rest}"))));
    }
    let Some(body) = line.strip_prefix('/') else {
        return Ok(Some(Command::Say(line.to_string())));
    };
    let body = body.trim();
    let (cmd, rest) = match body.split_once(char::is_whitespace) {
        Some((c, r)) => (c, r.trim()),
        None => (body, ""),
    };
    let need = |what: &str| -> Result<String, String> {
        if rest.is_empty() {
            Err(format!("usage: /{cmd} {what}"))
        } else {
            Ok(rest.to_string())
        }
    };
    let two = |what: &str| -> Result<(String, String), String> {
        match rest.split_once(char::is_whitespace) {
            Some((a, b)) if !b.trim().is_empty() => Ok((a.to_string(), b.trim().to_string())),
            _ => Err(format!("usage: /{cmd} {what}")),
        }
    };
    let c = match cmd.to_ascii_lowercase().as_str() {
        "connect" | "dial" => Command::Connect(need("<multiaddr>")?),
        "join" | "j" => Command::Join(need("<room>")?.trim_start_matches('#').to_string()),
        "leave" | "part" => {
            Command::Leave((!rest.is_empty()).then(|| rest.trim_start_matches('#').to_string()))
        }
        "nick" | "name" => Command::Nick(need("<name>")?),
        "msg" | "dm" | "m" => {
            let (peer, text) = two("<peer> <text>")?;
            Command::Msg { peer, text }
        }
        "send" => {
            let (room, text) = two("<room> <text>")?;
            Command::Send {
                room: room.trim_start_matches('#').to_string(),
                text,
            }
        }
        "peers" | "who" => Command::Peers,
        "rooms" => Command::Rooms,
        "addrs" | "addr" | "whoami" => Command::Addrs,
        "copy" | "yank" => Command::Copy(if rest.is_empty() {
            None
        } else {
            Some(
                rest.parse()
                    .map_err(|_| format!("usage: /copy [n] (n from /addrs, got {rest:?})"))?,
            )
        }),
        "share" | "send-file" => {
            let path = need("<path> [@peer|#room]")?;
            match path.rsplit_once(char::is_whitespace) {
                Some((p, to))
                    if (to.starts_with('@') || to.starts_with('#'))
                        && to.len() > 1
                        && !p.trim().is_empty() =>
                {
                    Command::Share {
                        path: p.trim().to_string(),
                        to: Some(to.to_string()),
                    }
                }
                _ => Command::Share { path, to: None },
            }
        }
        "get" | "download" => {
            let arg = need("<id> [dir]")?;
            match arg.split_once(char::is_whitespace) {
                Some((id, dir)) => Command::Get {
                    id: id.to_string(),
                    dir: Some(dir.trim().to_string()),
                },
                None => Command::Get { id: arg, dir: None },
            }
        }
        "files" => Command::Files,
        "cancel" => Command::Cancel(need("<id>")?),
        "state" => Command::State,
        "history" => {
            let mut words = need("<room> [lamport:seq:author] [n]")?
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
                .into_iter();
            let room = words.next().unwrap_or_default();
            let mut before = None;
            let mut limit = None;
            for w in words {
                if w.contains(':') && before.is_none() {
                    before = Some(w);
                } else if let (Ok(n), None) = (w.parse::<usize>(), limit) {
                    limit = Some(n);
                } else {
                    return Err("usage: /history <room> [lamport:seq:author] [n]".into());
                }
            }
            Command::History {
                room: room.trim_start_matches('#').to_string(),
                before,
                limit,
            }
        }
        "read" => Command::Read(need("<peer>")?),
        "help" | "h" | "?" => Command::Help,
        "quit" | "exit" | "q" => Command::Quit,
        _ => return Err(format!("unknown command /{cmd}; /help lists the commands")),
    };
    Ok(Some(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(parse("  "), Ok(None));
        assert_eq!(parse("hi there"), Ok(Some(Command::Say("hi there".into()))));
        assert_eq!(parse("//me"), Ok(Some(Command::Say("/me".into()))));
        assert_eq!(parse("/join #rust"), Ok(Some(Command::Join("rust".into()))));
        assert_eq!(parse("/leave"), Ok(Some(Command::Leave(None))));
        assert_eq!(
            parse("/msg bob#ab12 hello  you"),
            Ok(Some(Command::Msg {
                peer: "bob#ab12".into(),
                text: "hello  you".into()
            }))
        );
        assert!(parse("/msg bob").unwrap_err().contains("usage"));
        assert!(parse("/connect").unwrap_err().contains("usage"));
        assert!(parse("/frobnicate").unwrap_err().contains("unknown"));
        assert_eq!(parse("/QUIT"), Ok(Some(Command::Quit)));
        assert_eq!(parse("/copy"), Ok(Some(Command::Copy(None))));
        assert_eq!(parse("/copy 2"), Ok(Some(Command::Copy(Some(2)))));
        assert!(parse("/copy two").unwrap_err().contains("usage"));
        assert_eq!(
            parse("/share ~/My Docs/a b.pdf"),
            Ok(Some(Command::Share {
                path: "~/My Docs/a b.pdf".into(),
                to: None
            }))
        );
        assert_eq!(
            parse("/share a.pdf @bob#ab12"),
            Ok(Some(Command::Share {
                path: "a.pdf".into(),
                to: Some("@bob#ab12".into())
            }))
        );
        assert_eq!(
            parse("/share a b.pdf #side"),
            Ok(Some(Command::Share {
                path: "a b.pdf".into(),
                to: Some("#side".into())
            }))
        );
        // A file whose name starts with @ is a path, not a peer.
        assert_eq!(
            parse("/share @home.txt"),
            Ok(Some(Command::Share {
                path: "@home.txt".into(),
                to: None
            }))
        );
        assert!(parse("/share").unwrap_err().contains("usage"));
        assert_eq!(
            parse("/get 1a2b3c4d /tmp/my dir"),
            Ok(Some(Command::Get {
                id: "1a2b3c4d".into(),
                dir: Some("/tmp/my dir".into())
            }))
        );
        assert_eq!(
            parse("/get 1a2b3c4d"),
            Ok(Some(Command::Get {
                id: "1a2b3c4d".into(),
                dir: None
            }))
        );
        assert_eq!(parse("/files"), Ok(Some(Command::Files)));
        assert_eq!(
            parse("/cancel 1a2b"),
            Ok(Some(Command::Cancel("1a2b".into())))
        );
        assert!(parse("/cancel").unwrap_err().contains("usage"));
        assert_eq!(parse("/state"), Ok(Some(Command::State)));
        assert_eq!(
            parse("/history #general 12:3:12D3KooWabc 50"),
            Ok(Some(Command::History {
                room: "general".into(),
                before: Some("12:3:12D3KooWabc".into()),
                limit: Some(50)
            }))
        );
        assert_eq!(
            parse("/history general"),
            Ok(Some(Command::History {
                room: "general".into(),
                before: None,
                limit: None
            }))
        );
        assert!(parse("/history general x y").unwrap_err().contains("usage"));
    }
}
