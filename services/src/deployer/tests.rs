//! Snapshot tests of the zip validator on real zips (built with the zip crate), and of the
//! install: staging, swap, carry-over, disabled apps, bombs that lie about their sizes.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use expect_test::{expect, Expect};
use zip::write::SimpleFileOptions;

use super::apply;
use super::plan::{self, Limits};

enum E<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    /// A file entry with explicit external attributes (unix mode << 16).
    Raw(&'a str, u32),
}

fn zip_bytes(entries: &[E]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for e in entries {
        match e {
            E::File(name, data, mode) => {
                let o = SimpleFileOptions::default().unix_permissions(*mode);
                w.start_file(*name, o).unwrap();
                w.write_all(data).unwrap();
            }
            E::Dir(name) => {
                w.add_directory(*name, SimpleFileOptions::default())
                    .unwrap();
            }
            E::Symlink(name, target) => {
                w.add_symlink(*name, *target, SimpleFileOptions::default())
                    .unwrap();
            }
            E::Raw(name, mode) => {
                let o = SimpleFileOptions::default().external_attributes(*mode << 16);
                w.start_file(*name, o).unwrap();
            }
        }
    }
    w.finish().unwrap().into_inner()
}

fn write_zip(dir: &Path, name: &str, entries: &[E]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, zip_bytes(entries)).unwrap();
    p
}

fn check_with(entries: &[E], limits: &Limits, expect: Expect) {
    let dir = tempfile::tempdir().unwrap();
    let p = write_zip(dir.path(), "t.zip", entries);
    let metas = apply::read_entries(&p).unwrap();
    expect.assert_eq(&plan::render(&plan::validate(&metas, limits)));
}

fn check(entries: &[E], expect: Expect) {
    check_with(entries, &Limits::default(), expect);
}

const SH: &[u8] = b"#!/bin/sh\ndocker-compose up -d\n";

#[test]
fn a_composer_zip_with_directory_entries_is_accepted() {
    check(
        &[
            E::Dir("docker/"),
            E::Dir("docker/apps/"),
            E::Dir("docker/apps/demo/"),
            E::File(
                "docker/apps/demo/docker-compose.yml",
                b"version: '3.8'\n",
                0o644,
            ),
            E::File("docker/apps/demo/start.sh", SH, 0o644),
            E::Dir("docker/apps/demo/volumes/app-vol/"),
            E::File("docker/apps/other_1/start.sh", SH, 0o700),
            E::File("docker/apps/other_1/conf/a/b.txt", b"x", 0o600),
        ],
        expect![[r#"
            accepted: 78 bytes
            app demo
              dir  volumes/
              dir  volumes/app-vol/
              file docker-compose.yml 644 15 bytes
              file start.sh 644 31 bytes
            app other_1
              dir  conf/
              dir  conf/a/
              file start.sh 700 31 bytes
              file conf/a/b.txt 600 1 bytes
        "#]],
    );
}

#[test]
fn paths_that_escape_or_lie_outside_the_apps_are_refused() {
    check(
        &[
            E::File("docker/apps/ok/start.sh", SH, 0o755),
            E::File("../etc/passwd", b"x", 0o644),
            E::File("docker/apps/ok/../../../envvars", b"x", 0o644),
            E::File("/etc/shadow", b"x", 0o644),
            E::File("envvars", b"x", 0o644),
            E::File("runtime/iohub-bootstrap/end", b"x", 0o755),
            E::File("docker/apps/ok/./x", b"x", 0o644),
            E::File("docker/apps/ok//x", b"x", 0o644),
            E::File("docker/apps/ok\\x", b"x", 0o644),
            E::File("docker/global/start.sh", b"x", 0o755),
            E::File("docker/apps/start.sh", b"x", 0o755),
            E::File("C:/x", b"x", 0o644),
        ],
        expect![[r#"
            refused:
              forbidden: `../etc/passwd` has a `..` component
              forbidden: `docker/apps/ok/../../../envvars` has a `..` component
              forbidden: `/etc/shadow` is an absolute path
              forbidden: `envvars` is outside docker/apps/<app>/
              forbidden: `runtime/iohub-bootstrap/end` is outside docker/apps/<app>/
              forbidden: `docker/apps/ok/./x` has an empty or `.` component
              forbidden: `docker/apps/ok//x` has an empty or `.` component
              forbidden: `docker/apps/ok\x` has a backslash in its name
              forbidden: `docker/global/start.sh` is outside docker/apps/<app>/
              forbidden: `docker/apps/start.sh` is outside docker/apps/<app>/
              forbidden: `C:/x` is an absolute path
        "#]],
    );
}

#[test]
fn symlinks_devices_and_fifos_are_refused() {
    check(
        &[
            E::File("docker/apps/ok/start.sh", SH, 0o755),
            E::Symlink("docker/apps/ok/link", "/etc"),
            E::Raw("docker/apps/ok/dev", 0o020644),
            E::Raw("docker/apps/ok/blk", 0o060644),
            E::Raw("docker/apps/ok/fifo", 0o010644),
        ],
        expect![[r#"
            refused:
              forbidden: `docker/apps/ok/link` is a symbolic link
              forbidden: `docker/apps/ok/dev` is a device file
              forbidden: `docker/apps/ok/blk` is a device file
              forbidden: `docker/apps/ok/fifo` is a fifo or socket
        "#]],
    );
}

#[test]
fn bad_app_names_are_refused_but_an_app_without_start_sh_is_valid() {
    check(
        &[
            E::File("docker/apps/MyApp/start.sh", SH, 0o755),
            E::File("docker/apps/9lives/start.sh", SH, 0o755),
            E::File("docker/apps/.hidden/start.sh", SH, 0o755),
            E::File("docker/apps/nostart/docker-compose.yml", b"x", 0o644),
            E::File(
                "docker/apps/a234567890123456789012345678901234567890123456789012345678901234/start.sh",
                SH,
                0o755,
            ),
        ],
        expect![[r#"
            refused:
              invalid_value: `docker/apps/MyApp/start.sh` `MyApp` is not a valid app name (a lowercase letter, then up to 63 lowercase letters, digits, `-` or `_`)
              invalid_value: `docker/apps/9lives/start.sh` `9lives` is not a valid app name (a lowercase letter, then up to 63 lowercase letters, digits, `-` or `_`)
              invalid_value: `docker/apps/.hidden/start.sh` `.hidden` is not a valid app name (a lowercase letter, then up to 63 lowercase letters, digits, `-` or `_`)
        "#]],
    );
    check(
        &[E::Dir("docker/"), E::Dir("docker/apps/")],
        expect![[r#"
            refused:
              missing: the zip holds no app (expected docker/apps/<app>/...)
        "#]],
    );
}

#[test]
fn limits_on_entries_and_declared_sizes_are_enforced() {
    let limits = Limits {
        max_entries: 3,
        max_entry_bytes: 100,
        max_total_bytes: 150,
        max_path_bytes: 40,
    };
    let big = vec![b'0'; 101];
    let ninety = vec![b'0'; 90];
    check_with(
        &[
            E::File("docker/apps/a/start.sh", SH, 0o755),
            E::File("docker/apps/a/big", &big, 0o644),
            E::File("docker/apps/a/x", b"", 0o644),
            E::File("docker/apps/a/y", b"", 0o644),
        ],
        &limits,
        expect![[r#"
            refused:
              invalid_value: 4 entries; at most 3 are accepted
        "#]],
    );
    check_with(
        &[
            E::File("docker/apps/a/start.sh", SH, 0o755),
            E::File("docker/apps/a/big", &big, 0o644),
        ],
        &limits,
        expect![[r#"
            refused:
              invalid_value: `docker/apps/a/big` declares 101 bytes; at most 100 per file
        "#]],
    );
    check_with(
        &[
            E::File("docker/apps/a/start.sh", SH, 0o755),
            E::File("docker/apps/a/n1", &ninety, 0o644),
            E::File(
                "docker/apps/a/n2/very/long/name/past/the/limit/of/sixty",
                b"",
                0o644,
            ),
        ],
        &limits,
        expect![[r#"
            refused:
              forbidden: `docker/apps/a/n2/very/long/name/past/the/limit/of/sixty` has a name that is too long
        "#]],
    );
    check_with(
        &[
            E::File("docker/apps/a/start.sh", SH, 0o755),
            E::File("docker/apps/a/n1", &ninety, 0o644),
            E::File("docker/apps/a/n2", &ninety, 0o644),
        ],
        &limits,
        expect![[r#"
            refused:
              invalid_value: declares 211 bytes in all; at most 150 are accepted
        "#]],
    );
}

#[test]
fn duplicate_and_file_directory_conflicts_are_refused() {
    let metas = vec![
        plan::EntryMeta {
            index: 0,
            name: "docker/apps/a/start.sh".into(),
            dir_name: false,
            unix_mode: None,
            size: 1,
            encrypted: false,
        },
        plan::EntryMeta {
            index: 1,
            name: "docker/apps/a/start.sh".into(),
            dir_name: false,
            unix_mode: None,
            size: 1,
            encrypted: true,
        },
        plan::EntryMeta {
            index: 2,
            name: "docker/apps/a/conf".into(),
            dir_name: false,
            unix_mode: Some(0o100644),
            size: 1,
            encrypted: false,
        },
        plan::EntryMeta {
            index: 3,
            name: "docker/apps/a/conf/x".into(),
            dir_name: false,
            unix_mode: None,
            size: 1,
            encrypted: false,
        },
        plan::EntryMeta {
            index: 4,
            name: "docker/apps/a/start.sh".into(),
            dir_name: false,
            unix_mode: None,
            size: 1,
            encrypted: false,
        },
    ];
    expect![[r#"
        refused:
          forbidden: `docker/apps/a/start.sh` is encrypted
          conflict: `docker/apps/a/start.sh` appears twice
          conflict: `docker/apps/a/conf` is a file and a directory
    "#]]
    .assert_eq(&plan::render(&plan::validate(&metas, &Limits::default())));
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn install(root: &Path, entries: &[E]) -> Result<Vec<apply::Installed>, String> {
    let zip = write_zip(root, "in.zip", entries);
    let metas = apply::read_entries(&zip).unwrap();
    let manifest = plan::validate(&metas, &Limits::default()).map_err(|p| format!("{p:?}"))?;
    apply::install(root, &zip, &manifest, &Limits::default()).map_err(|e| e.to_string())
}

fn tree(root: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                out.push(format!("{rel}/"));
                walk(base, &p, out);
            } else {
                out.push(format!("{rel} {:o}", mode(&p)));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

#[test]
fn install_swaps_apps_keeps_volume_data_and_respects_a_disabled_app() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let first = install(
        root,
        &[
            E::File("docker/apps/web/start.sh", SH, 0o644),
            E::File("docker/apps/web/docker-compose.yml", b"v1", 0o644),
            E::File("docker/apps/off/start.sh", SH, 0o644),
        ],
    )
    .unwrap();
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|i| !i.disabled && !i.replaced));
    let web = root.join("docker/apps/web");
    assert_eq!(mode(&web.join("start.sh")), 0o755);
    // The app writes volume data; the user disables `off`.
    std::fs::create_dir_all(web.join("volumes/data")).unwrap();
    std::fs::write(web.join("volumes/data/db"), b"precious").unwrap();
    std::fs::set_permissions(
        root.join("docker/apps/off/start.sh"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();

    let second = install(
        root,
        &[
            E::File("docker/apps/web/start.sh", SH, 0o600),
            E::File("docker/apps/web/docker-compose.yml", b"v2", 0o644),
            E::File("docker/apps/off/start.sh", b"#!/bin/sh\n", 0o755),
        ],
    )
    .unwrap();
    assert!(second.iter().all(|i| i.replaced));
    assert!(second.iter().any(|i| i.app == "off" && i.disabled));
    assert_eq!(
        std::fs::read(web.join("docker-compose.yml")).unwrap(),
        b"v2"
    );
    std::fs::remove_file(root.join("in.zip")).unwrap();
    expect![[r#"
        [
            "docker/",
            "docker/apps/",
            "docker/apps/off/",
            "docker/apps/off/start.sh 644",
            "docker/apps/web/",
            "docker/apps/web/docker-compose.yml 644",
            "docker/apps/web/start.sh 755",
            "docker/apps/web/volumes/",
            "docker/apps/web/volumes/data/",
            "docker/apps/web/volumes/data/db 644",
        ]
    "#]]
    .assert_debug_eq(&tree(root));
    assert_eq!(
        std::fs::read(web.join("volumes/data/db")).unwrap(),
        b"precious"
    );
}

#[test]
fn an_app_without_start_sh_installs_disabled_and_an_existing_start_sh_is_kept() {
    // What `POST /v1/app/<app>/deploy` without `enabled=true` sends: only the compose file.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let first = install(
        root,
        &[E::File("docker/apps/new/docker-compose.yml", b"v1", 0o644)],
    )
    .unwrap();
    assert!(first[0].disabled && !first[0].replaced);
    let new = root.join("docker/apps/new");
    assert!(!new.join("start.sh").exists());
    // An app with a start.sh of its own keeps it, bytes and mode, enabled or not.
    install(
        root,
        &[
            E::File("docker/apps/on/start.sh", b"#!/bin/sh\necho on\n", 0o755),
            E::File("docker/apps/off/start.sh", b"#!/bin/sh\necho off\n", 0o755),
        ],
    )
    .unwrap();
    sys::fs::set_mode(&root.join("docker/apps/off/start.sh"), 0o644).unwrap();
    let second = install(
        root,
        &[
            E::File("docker/apps/on/docker-compose.yml", b"v2", 0o644),
            E::File("docker/apps/off/docker-compose.yml", b"v2", 0o644),
        ],
    )
    .unwrap();
    assert!(second
        .iter()
        .any(|i| i.app == "on" && !i.disabled && i.replaced));
    assert!(second
        .iter()
        .any(|i| i.app == "off" && i.disabled && i.replaced));
    let on = root.join("docker/apps/on/start.sh");
    assert_eq!(std::fs::read(&on).unwrap(), b"#!/bin/sh\necho on\n");
    assert_eq!(mode(&on), 0o755);
    assert_eq!(mode(&root.join("docker/apps/off/start.sh")), 0o644);
}

#[test]
fn an_entry_larger_than_it_declares_aborts_the_install_and_leaves_no_staging() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let zip = write_zip(
        root,
        "bomb.zip",
        &[
            E::File("docker/apps/b/start.sh", SH, 0o755),
            E::File("docker/apps/b/payload", &vec![0u8; 100_000], 0o644),
        ],
    );
    let mut metas = apply::read_entries(&zip).unwrap();
    // A lying central directory: the payload says 10 bytes.
    metas[1].size = 10;
    let manifest = plan::validate(&metas, &Limits::default()).unwrap();
    let err = apply::install(root, &zip, &manifest, &Limits::default()).unwrap_err();
    expect![[
        r#"entry `docker/apps/b/payload` holds more than 10 bytes but declares 10 (a zip bomb?)"#
    ]]
    .assert_eq(&err.to_string());
    expect![[r#"
        [
            "bomb.zip 644",
            "docker/",
            "docker/apps/",
        ]
    "#]]
    .assert_debug_eq(&tree(root));
}

#[test]
fn recovery_restores_an_app_moved_aside_and_removes_staging_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let apps = dir.path().join("docker/apps");
    std::fs::create_dir_all(apps.join(".old-web-0123456789abcdef")).unwrap();
    std::fs::create_dir_all(apps.join(".staging-web-0123456789abcdef")).unwrap();
    std::fs::create_dir_all(apps.join(".old-db-0123456789abcdef")).unwrap();
    std::fs::create_dir_all(apps.join("db")).unwrap();
    let mut done = apply::recover(dir.path());
    done.sort();
    expect![[r#"
        [
            "removed .old-db-0123456789abcdef",
            "removed .staging-web-0123456789abcdef",
            "restored web from .old-web-0123456789abcdef",
        ]
    "#]]
    .assert_debug_eq(&done);
    assert!(apps.join("web").is_dir());
}

#[test]
fn a_refused_zip_moves_to_rejected_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("deploy")).unwrap();
    let zip = write_zip(
        &root.join("deploy"),
        "bad app.zip",
        &[E::File("envvars", b"x", 0o644)],
    );
    let to = apply::reject(root, &zip, "refused:\n").unwrap();
    assert_eq!(to, "deploy/rejected/bad app.zip");
    assert!(!zip.exists());
    assert_eq!(
        std::fs::read_to_string(root.join("deploy/rejected/bad app.zip.reason.txt")).unwrap(),
        "refused:\n"
    );
}

#[test]
fn a_symlink_in_deploy_is_refused_without_being_opened() {
    let dir = tempfile::tempdir().unwrap();
    let real = write_zip(
        dir.path(),
        "real.zip",
        &[E::File("docker/apps/a/start.sh", SH, 0o755)],
    );
    let link = dir.path().join("link.zip");
    sys::fs::replace_symlink(&link, &real).unwrap();
    let e = apply::read_entries(&link).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
    assert!(apply::read_entries(&real).is_ok());
}
