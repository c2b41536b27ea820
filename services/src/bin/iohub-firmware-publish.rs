//! `iohub-firmware-publish --key KEY.pem [--rollout-bp BP] [--rollout VERSION=BP]... DIR`: write
//! and sign `DIR/release.json` (+ `release.json.sig`) for the firmware bundles in `DIR`, the
//! manifest an HTTPS source serves to boxes polling it (`IOHUBOS_UPGRADER_URL`). Widening a
//! rollout is running it again with a larger `--rollout-bp`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use services::firmware::publish::{self, Shares, SigningKey};

/// Build and sign the release manifest of a directory of firmware bundles.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The ed25519 signing key, PKCS#8 PEM (`openssl genpkey -algorithm ed25519`); boxes trust
    /// its public key in /usr/lib/iohub/firmware-keys/.
    #[arg(long, value_name = "PEM")]
    key: PathBuf,
    /// The key is a development key (boxes trust it as `<id>.development.pem`).
    #[arg(long)]
    development: bool,
    /// The newest bundle's rollout share in basis points (0-10000; 10000 = every box).
    #[arg(long, value_name = "BP")]
    rollout_bp: Option<u16>,
    /// The share of one version, `VERSION=BP` (repeatable).
    #[arg(long, value_name = "VERSION=BP")]
    rollout: Vec<String>,
    /// The directory of bundles (`*.tgz`) served next to the manifest.
    dir: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(text) => {
            let _ = writeln!(std::io::stdout(), "{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "iohub-firmware-publish: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<String, String> {
    let pem =
        std::fs::read_to_string(&args.key).map_err(|e| format!("{}: {e}", args.key.display()))?;
    let key = SigningKey::from_pem(&pem, args.development)
        .map_err(|e| format!("{}: {e}", args.key.display()))?;
    let mut shares = Shares {
        newest: args.rollout_bp,
        ..Shares::default()
    };
    for r in &args.rollout {
        let (v, bp) = r
            .split_once('=')
            .and_then(|(v, bp)| Some((v.to_string(), bp.parse::<u16>().ok()?)))
            .ok_or_else(|| format!("--rollout {r}: expected VERSION=BP"))?;
        shares.by_version.insert(v, bp);
    }
    let published = jiff::Timestamp::now().to_string();
    let release = publish::publish(&args.dir, &key, &shares, &published)?;
    let lines: Vec<String> = release
        .bundles
        .iter()
        .map(|b| {
            format!(
                "{} {} {} bytes rollout {}/10000",
                b.version, b.file, b.size, b.rollout_bp
            )
        })
        .collect();
    Ok(format!(
        "{}: signed by key {}\n{}",
        args.dir.join(publish::RELEASE_FILE).display(),
        key.id,
        lines.join("\n")
    ))
}
