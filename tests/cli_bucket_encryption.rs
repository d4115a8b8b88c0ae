//! `ssefs bucket-encryption` through the real binary: put/get/delete and their JSON, the
//! same refusals as the mount's xattrs (each leaving the rule unchanged), the exit code of a
//! bucket without a rule, owner checks, and a change seen at once by an open keystore.

mod support;

use serde_json::{Value, json};
use ssefs::crypto::Algorithm;
use ssefs::keystore::{BucketRule, CmkOrigin, Keystore, keystore_dir, load_root_key_file};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};
use support::cli::Scratch;
use support::cli::{assert_failed_with, hand_over};
use support::sys::is_root;

const OTHER_UID: u32 = 65534;

/// The store of [`Scratch`] with a bucket `photos`.
fn scratch() -> Scratch {
    let s = Scratch::new();
    std::fs::create_dir(s.store().join("photos")).unwrap();
    s
}

impl Scratch {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.bare();
        cmd.arg("bucket-encryption")
            .args(args)
            .arg("--store")
            .arg(self.store())
            .arg("--root-key")
            .arg(self.key());
        cmd
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.run(&all);
        assert!(out.status.success(), "{all:?}: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }
    fn fails(&self, args: &[&str], needle: &str) {
        assert_failed_with(&self.run(args), needle);
    }
    fn keystore(&self) -> Keystore {
        let root = load_root_key_file(&self.key()).unwrap();
        Keystore::open(&keystore_dir(&self.store()), &root).unwrap()
    }
    fn rule(&self) -> Option<BucketRule> {
        self.keystore().bucket_rule("photos").unwrap()
    }
    /// When the tests run as root, gives the whole scratch tree (store, bucket, root key) to
    /// `OTHER_UID`; otherwise everything already belongs to the unprivileged current user.
    fn give_to_other_user(&self) {
        if is_root() {
            hand_over(self.dir.path(), OTHER_UID);
        }
    }
    /// As `run`, as an unprivileged uid: `OTHER_UID` when the tests run as root, else the
    /// current user.
    fn as_other_user(&self, args: &[&str]) -> Output {
        let mut cmd = self.cmd(args);
        if is_root() {
            cmd.uid(OTHER_UID).gid(OTHER_UID);
        }
        cmd.output().unwrap()
    }
    fn other_uid(&self) -> u32 {
        if is_root() {
            OTHER_UID
        } else {
            // SAFETY: getuid cannot fail and takes no pointers.
            unsafe { libc::getuid() }
        }
    }
}

fn kms_rule(key: Option<&str>) -> BucketRule {
    BucketRule {
        algorithm: Algorithm::Kms,
        kms_key_id: key.map(str::to_string),
    }
}

#[test]
fn put_get_delete_round_trip_with_oss_json() {
    let s = scratch();
    let out = s.run(&["get", "photos"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "ssefs: bucket photos has no default encryption rule\n"
    );

    let v = s.json(&["put", "photos", "--algorithm", "AES256"]);
    assert_eq!(v, json!({"SSEAlgorithm": "AES256", "KMSMasterKeyID": null}));
    assert_eq!(s.json(&["get", "photos"]), v);
    let text = s.run(&["get", "photos"]);
    assert_eq!(String::from_utf8_lossy(&text.stdout), "photos: AES256\n");

    let id = s
        .keystore()
        .create_cmk("", Some("alias/photos"), CmkOrigin::Ssefs, 0)
        .unwrap();
    let v = s.json(&[
        "put",
        "photos",
        "--algorithm",
        "KMS",
        "--kms-key-id",
        "alias/photos",
    ]);
    assert_eq!(
        v,
        json!({"SSEAlgorithm": "KMS", "KMSMasterKeyID": "alias/photos"})
    );
    assert_eq!(s.rule(), Some(kms_rule(Some("alias/photos"))));
    s.json(&["put", "photos", "--algorithm", "KMS", "--kms-key-id", &id]);
    assert_eq!(s.rule(), Some(kms_rule(Some(&id))));

    let out = s.run(&["delete", "photos"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(s.rule(), None);
    assert_eq!(s.run(&["get", "photos", "--json"]).status.code(), Some(3));
    // Deleting a rule that is not there is not an error (as DeleteBucketEncryption).
    assert!(s.run(&["delete", "photos"]).status.success());
}

#[test]
fn kms_without_a_key_id_uses_the_default_cmk_created_on_first_use() {
    let s = scratch();
    assert!(s.keystore().list_cmks().unwrap().is_empty());
    let v = s.json(&["put", "photos", "--algorithm", "KMS"]);
    assert_eq!(v, json!({"SSEAlgorithm": "KMS", "KMSMasterKeyID": null}));
    let keys = s.keystore().list_cmks().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].aliases, vec!["alias/acs/oss".to_string()]);
    let text = s.run(&["get", "photos"]);
    assert_eq!(
        String::from_utf8_lossy(&text.stdout),
        format!(
            "photos: KMS with the default CMK alias/acs/oss ({})\n",
            keys[0].key_id
        )
    );
    // Naming the default alias works too, and creates no second key.
    s.json(&[
        "put",
        "photos",
        "--algorithm",
        "KMS",
        "--kms-key-id",
        "alias/acs/oss",
    ]);
    assert_eq!(s.keystore().list_cmks().unwrap().len(), 1);
}

#[test]
fn invalid_rules_are_refused_and_leave_the_rule_unchanged() {
    let s = scratch();
    s.json(&["put", "photos", "--algorithm", "AES256"]);
    let ks = s.keystore();
    let disabled = ks
        .create_cmk("", Some("alias/off"), CmkOrigin::Ssefs, 0)
        .unwrap();
    let pending = ks
        .create_cmk("", Some("alias/going"), CmkOrigin::Ssefs, 0)
        .unwrap();
    let byok = ks
        .create_cmk("", Some("alias/byok"), CmkOrigin::External, 0)
        .unwrap();
    let root = ssefs::keystore::Caller {
        uid: 0,
        gid: 0,
        groups: vec![],
        pid: 1,
    };
    ks.disable_cmk(&disabled, &root).unwrap();
    ks.schedule_cmk_deletion(&pending, 7, &root).unwrap();
    drop(ks);
    // An unknown algorithm is a usage error (exit 2), said by the one algorithm rule.
    for bad in ["DES", "aes256"] {
        let out = s.run(&["put", "photos", "--algorithm", bad]);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let needle =
            format!("unknown server-side encryption algorithm \"{bad}\": use AES256 or KMS");
        assert!(stderr.contains(&needle), "{stderr}");
    }
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "put",
                "photos",
                "--algorithm",
                "AES256",
                "--kms-key-id",
                "alias/off",
            ],
            "a KMS key id goes only with KMS",
        ),
        (
            &[
                "put",
                "photos",
                "--algorithm",
                "KMS",
                "--kms-key-id",
                "alias/none",
            ],
            "no such CMK: alias/none",
        ),
        (
            &[
                "put",
                "photos",
                "--algorithm",
                "KMS",
                "--kms-key-id",
                "alias/off",
            ],
            "is Disabled, not Enabled",
        ),
        (
            &[
                "put",
                "photos",
                "--algorithm",
                "KMS",
                "--kms-key-id",
                &pending,
            ],
            "is PendingDeletion, not Enabled",
        ),
        (
            &["put", "photos", "--algorithm", "KMS", "--kms-key-id", &byok],
            "is PendingImport, not Enabled",
        ),
        (
            &["put", "nobucket", "--algorithm", "AES256"],
            "no bucket \"nobucket\"",
        ),
        (
            &["put", "Bad_Name", "--algorithm", "AES256"],
            "invalid bucket name",
        ),
        (&["get", ".ssefs"], "invalid bucket name"),
    ];
    for (args, needle) in cases {
        s.fails(args, needle);
        assert_eq!(
            s.rule(),
            Some(BucketRule {
                algorithm: Algorithm::Aes256,
                kms_key_id: None
            }),
            "{args:?}"
        );
    }
    // A CMK destroyed after its deletion date is refused as revoked.
    let date = s
        .keystore()
        .cmk_info(&pending)
        .unwrap()
        .deletion_date
        .unwrap();
    s.fails(
        &[
            "put",
            "photos",
            "--algorithm",
            "KMS",
            "--kms-key-id",
            &pending,
            "--now",
            &date.to_string(),
        ],
        "is Destroyed, not Enabled",
    );
    // A missing --algorithm is a usage error.
    assert_eq!(s.run(&["put", "photos"]).status.code(), Some(2));
}

#[test]
fn bucket_owner_and_key_grants_decide_who_may_put_a_rule() {
    let s = scratch();
    let ks = s.keystore();
    let theirs = ks
        .create_cmk("", Some("alias/theirs"), CmkOrigin::Ssefs, 4242)
        .unwrap();
    drop(ks);
    let other = s.other_uid();
    s.give_to_other_user();
    if is_root() {
        // Root's bucket: another uid may not change its rule.
        let bucket = s.store().join("photos");
        std::os::unix::fs::chown(&bucket, Some(0), Some(0)).unwrap();
        let out = s.as_other_user(&["put", "photos", "--algorithm", "AES256"]);
        assert_failed_with(&out, "only the bucket's owner (uid 0) or root");
        assert_eq!(s.rule(), None);
        std::os::unix::fs::chown(&bucket, Some(other), Some(other)).unwrap();
    }
    // The bucket's owner may set AES256 and the default CMK, but not someone else's CMK...
    let out = s.as_other_user(&["put", "photos", "--algorithm", "AES256"]);
    assert!(out.status.success(), "{out:?}");
    let args = [
        "put",
        "photos",
        "--algorithm",
        "KMS",
        "--kms-key-id",
        "alias/theirs",
    ];
    assert_failed_with(
        &s.as_other_user(&args),
        &format!("access denied: uid {other} may not encrypt with CMK {theirs}"),
    );
    assert_eq!(s.rule().unwrap().algorithm, Algorithm::Aes256);
    // ...until its owner grants encrypt.
    let owner = ssefs::keystore::Caller {
        uid: 4242,
        gid: 4242,
        groups: vec![],
        pid: 1,
    };
    s.keystore()
        .grant(
            &theirs,
            ssefs::keystore::Grantee::Uid(other),
            &[ssefs::keystore::KeyOp::Encrypt],
            &owner,
        )
        .unwrap();
    let out = s.as_other_user(&args);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(s.rule(), Some(kms_rule(Some("alias/theirs"))));
}

#[test]
fn an_open_keystore_sees_a_rule_change_at_once() {
    let s = scratch();
    // Stands for a running mount: a keystore kept open, reading the rule at each create.
    let mounted = s.keystore();
    assert_eq!(mounted.bucket_rule("photos").unwrap(), None);
    s.json(&["put", "photos", "--algorithm", "KMS"]);
    assert_eq!(mounted.bucket_rule("photos").unwrap(), Some(kms_rule(None)));
    let (key_id, _, _) = mounted.resolve_cmk("alias/acs/oss").unwrap();
    assert_eq!(mounted.default_cmk().unwrap(), key_id);
    s.run(&["delete", "photos"]);
    assert_eq!(mounted.bucket_rule("photos").unwrap(), None);
}
