//! grubenv: our blocks read by the real `grub-editenv`, and its blocks read by us.

use super::*;
use proptest::prelude::*;
use sys::cmd::{run, Cmd};

async fn editenv(file: &Path, args: &[&str]) -> String {
    let out = run(&Cmd::new("grub-editenv")
        .arg(file)
        .args(args.iter().copied()))
    .await
    .unwrap();
    assert!(out.success(), "grub-editenv {args:?}: {out:?}");
    out.stdout_tail
}

#[tokio::test]
async fn grub_editenv_reads_what_we_write_and_we_read_what_it_writes() {
    if !crate::shared::testenv::require_tool("grub-editenv") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("grubenv");
    // As mkimage.sh makes it.
    editenv(&file, &["create"]).await;
    editenv(&file, &["set", "iohub_default=A", "other=kept"]).await;
    let mut env = GrubEnv::read(&file).unwrap();
    assert_eq!(env.boot(), Boot::settle(Slot::A));
    env.set_boot(&Boot::settle(Slot::A).arm(Slot::B)).unwrap();
    env.write(&file).unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 1024);
    assert_eq!(
        editenv(&file, &["list"]).await,
        "iohub_default=A\nother=kept\niohub_trial=B\niohub_trial_left=3\n"
    );
    // What grub.cfg's save_env does on the trial boot.
    editenv(&file, &["set", "iohub_trial_left=2"]).await;
    let env = GrubEnv::read(&file).unwrap();
    assert_eq!(
        env.boot(),
        Boot {
            default: Slot::A,
            trial: Some(Slot::B),
            trial_left: 2
        }
    );
    // A commit.
    let mut env = env;
    env.set_boot(&Boot::settle(Slot::B)).unwrap();
    env.write(&file).unwrap();
    assert_eq!(
        editenv(&file, &["list"]).await,
        "iohub_default=B\nother=kept\niohub_trial=\niohub_trial_left=0\n"
    );
}

#[tokio::test]
async fn escaped_values_round_trip_with_grub_editenv() {
    if !crate::shared::testenv::require_tool("grub-editenv") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("grubenv");
    editenv(&file, &["create"]).await;
    editenv(&file, &["set", "a=back\\slash", "b=two\nlines", "c=x=y"]).await;
    let env = GrubEnv::read(&file).unwrap();
    assert_eq!(env.get("a"), Some("back\\slash"));
    assert_eq!(env.get("b"), Some("two\nlines"));
    assert_eq!(env.get("c"), Some("x=y"));
    // Byte for byte what grub-editenv writes.
    assert_eq!(env.to_block().unwrap(), std::fs::read(&file).unwrap());
}

#[test]
fn a_block_that_is_not_one_is_refused_and_a_full_one_is_not_written() {
    assert!(matches!(
        GrubEnv::parse(b"iohub_default=B\n", "x"),
        Err(GrubEnvError::Format(_, _))
    ));
    let mut env = GrubEnv::default();
    env.set("big", &"x".repeat(1000)).unwrap();
    assert!(matches!(env.to_block(), Err(GrubEnvError::Full(_))));
    assert!(env.set("a=b", "c").is_err());
}

#[test]
fn unknown_values_read_the_way_grub_cfg_reads_them() {
    let mut env = GrubEnv::default();
    env.set(DEFAULT, "C").unwrap();
    env.set(TRIAL, "B").unwrap();
    env.set(TRIAL_LEFT, "7").unwrap();
    // Anything but B is A; a count GRUB does not know is no try left.
    assert_eq!(
        env.boot(),
        Boot {
            default: Slot::A,
            trial: Some(Slot::B),
            trial_left: 0
        }
    );
}

proptest! {
    #[test]
    fn blocks_round_trip(vars in proptest::collection::btree_map("[a-z_]{1,12}", "[ -~\n]{0,20}", 0..12)) {
        let mut env = GrubEnv::default();
        for (n, v) in &vars {
            env.set(n, v).unwrap();
        }
        let block = env.to_block().unwrap();
        prop_assert_eq!(block.len(), BLOCK);
        prop_assert_eq!(GrubEnv::parse(&block, "p").unwrap(), env);
    }
}
