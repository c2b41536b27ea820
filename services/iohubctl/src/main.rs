//! `iohubctl --root DIR <command>`: talk to a running iohubd over its bus.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bus_schema::{Reply, ServiceName, ServiceState, Verb};
use clap::{Parser, Subcommand};
use iohubctl::{Ctl, CtlError};

/// Control a running iohubd. Finds the daemon and its credentials from the root.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The data root iohubd runs on.
    #[arg(long, global = true, default_value = "/iohub")]
    root: PathBuf,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    /// How long to wait for the daemon.
    #[arg(long, global = true, default_value = "5", value_name = "SECS")]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A table of services: phase, generation, restarts, last error.
    Status,
    /// Show a variable (`IOHUBOS_...`) or a config section (`network`, `firewall`, ...).
    Get { name: String },
    /// Set variables: `iohubctl set IOHUBOS_X=value ...` (validated by the daemon, written by it).
    Set {
        /// Commit-confirm: undo the change unless `iohubctl confirm TOKEN` follows within this
        /// time (`90s`, `5m`, or seconds).
        #[arg(long, value_name = "DURATION", value_parser = parse_secs)]
        confirm: Option<u32>,
        /// Check everything and print what each affected service's plan would become; write
        /// nothing.
        #[arg(long, conflicts_with = "confirm")]
        dry_run: bool,
        #[arg(required = true, value_name = "VAR=VALUE")]
        assignments: Vec<String>,
    },
    /// Keep a change made with `set --confirm` (the token is in its output and in
    /// `iohubctl get`-able state `iohub/state/config`).
    Confirm { token: String },
    /// The plans every service published (what they would change / did change).
    Plan,
    /// Follow events (`iohub/event/#`).
    Events,
    /// Follow any topic filter.
    Watch { filter: String },
    /// Firmware: signed A/B bundles (the original's `iohub-install-firmware`,
    /// `iohub-next-partition` and `iohub-set-boot-default` are these, also under their names).
    Firmware {
        #[command(subcommand)]
        command: FirmwareCommand,
    },
}

#[derive(Subcommand, Debug)]
enum FirmwareCommand {
    /// Verify a bundle and write it into the other slot, then arm one trial boot of it.
    Install {
        /// The bundle: a path on the box (absolute, or relative to the data root), or an
        /// `https://` URL fetched with the HTTPS source's CA and client certificate.
        bundle: String,
        /// Accept a version older than the running one.
        #[arg(long)]
        downgrade: bool,
        /// Reboot into the trial once installed.
        #[arg(long)]
        reboot: bool,
        /// The disk to install on (`-b`, the original's); only the disk the box runs from.
        #[arg(short = 'b', value_name = "DISK")]
        disk: Option<PathBuf>,
        /// The original's menu title: GRUB's menu is static here, so it is ignored.
        #[arg(short = 'm', value_name = "TITLE")]
        title: Option<String>,
    },
    /// Slots, versions, grubenv, the trial in progress and the last result.
    Status,
    /// Make the slot on trial the default now (without waiting for the health gate).
    Commit,
    /// Leave a trial for the last good slot, or arm a trial of the other (previous) slot.
    Rollback {
        #[arg(long)]
        reboot: bool,
    },
    /// Make slot 1|2 (A|B) the default, trial cleared (`iohub-set-boot-default`).
    SetDefault {
        slot: String,
        #[arg(short = 'b', value_name = "DISK")]
        disk: Option<PathBuf>,
        #[arg(short = 'm', value_name = "TITLE")]
        title: Option<String>,
    },
    /// Print the other slot's number, 1 or 2, without a newline (`iohub-next-partition`).
    NextPartition,
    /// Reboot (refused while an install runs).
    Reboot,
}

/// The original's tool names (SPEC §8.2), when iohubctl is called through a link of that name.
fn original_name_args() -> Option<Vec<std::ffi::OsString>> {
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let name = std::path::Path::new(argv.first()?)
        .file_name()?
        .to_str()?
        .to_string();
    let sub = match name.trim_end_matches(".sh") {
        "iohub-install-firmware" => "install",
        "iohub-next-partition" => "next-partition",
        "iohub-set-boot-default" => "set-default",
        _ => return None,
    };
    argv.splice(1..1, ["firmware".into(), sub.into()]);
    argv[0] = "iohubctl".into();
    Some(argv)
}

fn main() -> ExitCode {
    let args = match original_name_args() {
        Some(argv) => Args::parse_from(argv),
        None => Args::parse(),
    };
    if let Command::Firmware {
        command: FirmwareCommand::NextPartition,
    } = &args.command
    {
        return next_partition();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("iohubctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("iohubctl: {e}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stdout)]
fn out(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
}

async fn run(args: Args) -> Result<ExitCode, CtlError> {
    let timeout = Duration::from_secs(args.timeout);
    let mut ctl = Ctl::connect(&args.root, timeout).await?;
    match args.command {
        Command::Status => status(&mut ctl, args.json, timeout).await,
        Command::Get { name } => {
            let body = if name.starts_with("IOHUBOS_") {
                serde_json::json!({ "var": name })
            } else {
                serde_json::json!({ "section": name })
            };
            let reply = ctl
                .request(ServiceName::Config, Verb::Get, body, timeout)
                .await?;
            Ok(print_reply(&reply, args.json))
        }
        Command::Confirm { token } => {
            let body = serde_json::json!({ "token": token });
            let reply = ctl
                .request(ServiceName::Config, Verb::Confirm, body, timeout)
                .await?;
            Ok(print_reply(&reply, args.json))
        }
        Command::Set {
            assignments,
            confirm,
            dry_run,
        } => {
            let mut vars = serde_json::Map::new();
            for a in &assignments {
                let Some((name, value)) = a.split_once('=') else {
                    eprintln!("iohubctl: `{a}` is not VAR=VALUE");
                    return Ok(ExitCode::from(2));
                };
                vars.insert(
                    name.to_string(),
                    serde_json::Value::String(value.to_string()),
                );
            }
            let mut body = serde_json::json!({ "vars": vars });
            if let Some(secs) = confirm {
                body["confirm_secs"] = serde_json::json!(secs);
            }
            if dry_run {
                body["dry_run"] = serde_json::json!(true);
            }
            let reply = ctl
                .request(ServiceName::Config, Verb::Set, body, timeout)
                .await?;
            if dry_run && reply.ok && !args.json {
                print_dry_run(reply.result.as_ref());
                return Ok(ExitCode::SUCCESS);
            }
            Ok(print_reply(&reply, args.json))
        }
        Command::Plan => {
            let plans = ctl
                .snapshot(bus_schema::topic::filter::PLAN, timeout)
                .await?;
            for (topic, payload) in plans {
                let value: serde_json::Value =
                    serde_json::from_slice(&payload).unwrap_or(serde_json::Value::Null);
                if args.json {
                    out(&serde_json::json!({ "topic": topic, "plan": value }).to_string());
                } else {
                    out(&format!("== {topic}"));
                    out(&serde_json::to_string_pretty(&value).unwrap_or_default());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Events => follow(&mut ctl, bus_schema::topic::filter::EVENT, args.json).await,
        Command::Watch { filter } => follow(&mut ctl, &filter, args.json).await,
        Command::Firmware { command } => firmware(&mut ctl, command, args.json, timeout).await,
    }
}

async fn firmware(
    ctl: &mut Ctl,
    command: FirmwareCommand,
    json: bool,
    timeout: Duration,
) -> Result<ExitCode, CtlError> {
    let (verb, body) = match command {
        FirmwareCommand::Install {
            bundle,
            downgrade,
            reboot,
            disk,
            title: _,
        } => {
            if let Err(e) = running_disk_is(disk.as_deref()) {
                eprintln!("iohubctl: {e}");
                return Ok(ExitCode::FAILURE);
            }
            if bundle.starts_with("https://") {
                let body = serde_json::json!({
                    "url": bundle, "downgrade": downgrade, "reboot": reboot,
                });
                let reply = ctl
                    .request(ServiceName::Firmware, Verb::Install, body, timeout)
                    .await?;
                return Ok(print_reply(&reply, json));
            }
            let path = std::path::Path::new(&bundle);
            // A relative path is the caller's, as with the original script.
            let path = match std::env::current_dir() {
                Ok(cwd) if path.is_relative() && cwd.join(path).exists() => cwd.join(path),
                _ => path.to_path_buf(),
            };
            let body = serde_json::json!({
                "path": path.display().to_string(), "downgrade": downgrade, "reboot": reboot,
            });
            (Verb::Install, body)
        }
        FirmwareCommand::Status => (Verb::Status, serde_json::json!({})),
        FirmwareCommand::Commit => (Verb::Commit, serde_json::json!({})),
        FirmwareCommand::Rollback { reboot } => {
            (Verb::Rollback, serde_json::json!({"reboot": reboot}))
        }
        FirmwareCommand::SetDefault {
            slot,
            disk,
            title: _,
        } => {
            if let Err(e) = running_disk_is(disk.as_deref()) {
                eprintln!("iohubctl: {e}");
                return Ok(ExitCode::FAILURE);
            }
            (Verb::Set, serde_json::json!({"slot": slot}))
        }
        FirmwareCommand::Reboot => (Verb::Reboot, serde_json::json!({})),
        FirmwareCommand::NextPartition => return Ok(next_partition()),
    };
    let reply = ctl
        .request(ServiceName::Firmware, verb, body, timeout)
        .await?;
    Ok(print_reply(&reply, json))
}

/// `-b DISK` (the original ignored it): the slots written are those of the disk the box runs
/// from, so another disk is refused rather than silently ignored.
fn running_disk_is(disk: Option<&std::path::Path>) -> Result<(), String> {
    let Some(disk) = disk else { return Ok(()) };
    let slot = std::fs::canonicalize("/dev/disk/by-partlabel/iohubboot1")
        .map_err(|e| format!("-b {}: the running disk is unknown ({e})", disk.display()))?;
    let text = slot.to_string_lossy();
    let base = text.trim_end_matches(|c: char| c.is_ascii_digit());
    // `/dev/nvme0n1p2` -> `/dev/nvme0n1`, `/dev/sda2` -> `/dev/sda`.
    let running = match base.strip_suffix('p') {
        Some(b) if b.ends_with(|c: char| c.is_ascii_digit()) => b,
        _ => base,
    };
    let wanted = std::fs::canonicalize(disk).unwrap_or_else(|_| disk.to_path_buf());
    if wanted.to_string_lossy() == running {
        Ok(())
    } else {
        Err(format!(
            "-b {}: only the disk the box runs from ({running}) can be written",
            disk.display()
        ))
    }
}

/// `iohub-next-partition`: `iohub.slot=A` (or `iohub-boot1`) -> 2, else 1; no newline.
fn next_partition() -> ExitCode {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    let on_a = words
        .iter()
        .any(|w| *w == "iohub.slot=A" || *w == "iohub-boot1");
    let mut stdout = std::io::stdout().lock();
    let _ = write!(stdout, "{}", if on_a { 2 } else { 1 });
    ExitCode::SUCCESS
}

async fn follow(ctl: &mut Ctl, filter: &str, json: bool) -> Result<ExitCode, CtlError> {
    ctl.follow(filter, |m| {
        let text = String::from_utf8_lossy(&m.payload);
        if json {
            let payload: serde_json::Value = serde_json::from_slice(&m.payload)
                .unwrap_or_else(|_| serde_json::Value::String(text.to_string()));
            out(
                &serde_json::json!({ "topic": m.topic, "retain": m.retain, "payload": payload })
                    .to_string(),
            );
        } else {
            out(&format!("{} {}", m.topic, text));
        }
        true
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// `90`, `90s`, `5m`, `1h` -> seconds.
fn parse_secs(text: &str) -> Result<u32, String> {
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u32 = digits
        .parse()
        .map_err(|_| format!("`{text}`: expected a duration like 90s, 5m or 1h"))?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("`{text}`: unit must be s, m or h")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("`{text}`: too long"))
}

/// `set --dry-run`: the files that would be written, then each affected service's plan.
fn print_dry_run(result: Option<&serde_json::Value>) {
    let Some(result) = result else { return };
    let list = |v: &serde_json::Value| -> String {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let checked = &result["checked"];
    out(&format!(
        "dry run: nothing written; would write {}",
        list(&result["files"])
    ));
    out(&format!("sections changed: {}", list(&checked["sections"])));
    if let Some(plans) = checked["plans"].as_object() {
        for (service, plan) in plans {
            out(&format!("== plan of {service}"));
            out(&serde_json::to_string_pretty(plan).unwrap_or_default());
        }
    }
    if let Some(unchecked) = checked["unchecked"].as_object() {
        for (service, why) in unchecked {
            out(&format!(
                "== {service}: not checked ({})",
                why.as_str().unwrap_or_default()
            ));
        }
    }
}

fn print_reply(reply: &Reply, json: bool) -> ExitCode {
    if json {
        out(&serde_json::to_string(reply).unwrap_or_default());
    } else if reply.ok {
        if let Some(result) = &reply.result {
            out(&serde_json::to_string_pretty(result).unwrap_or_default());
        }
    } else {
        for e in &reply.errors {
            eprintln!("error: {e}");
        }
    }
    if reply.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn status(ctl: &mut Ctl, json: bool, timeout: Duration) -> Result<ExitCode, CtlError> {
    let states = ctl
        .snapshot(bus_schema::topic::filter::SERVICE_STATES, timeout)
        .await?;
    let mut rows = Vec::new();
    for (topic, payload) in &states {
        let name = topic.rsplit('/').next().unwrap_or(topic).to_string();
        match serde_json::from_slice::<ServiceState>(payload) {
            Ok(s) => rows.push((name, Some(s))),
            Err(_) => rows.push((name, None)),
        }
    }
    if json {
        let map: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|(n, s)| (n.clone(), serde_json::to_value(s).unwrap_or_default()))
            .collect();
        out(&serde_json::Value::Object(map).to_string());
        return Ok(ExitCode::SUCCESS);
    }
    out(&format!(
        "{:<12} {:<9} {:>10} {:>8}  {}",
        "SERVICE", "PHASE", "GENERATION", "RESTARTS", "LAST ERROR"
    ));
    for (name, state) in rows {
        match state {
            Some(s) => out(&format!(
                "{:<12} {:<9} {:>10} {:>8}  {}",
                name,
                s.phase.to_string(),
                s.generation,
                s.restarts,
                s.last_error
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "-".into())
            )),
            None => out(&format!("{name:<12} (unreadable state payload)")),
        }
    }
    Ok(ExitCode::SUCCESS)
}
