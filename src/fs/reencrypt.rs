//! Re-encryption of an object under another setting: a new DEK, the plaintext copied into a
//! new object in the store's temporary directory, synced, and swapped with the old backing
//! file in one `RENAME_EXCHANGE`. The inode and its shared open object move to the new file.

use super::inode::Inode;
use super::object::key_refusal;
use super::open_object::{BackingFile, OpenObject};
use super::policy::{KeyUse, SseSetting, algorithm_name, already_matches, key_for_setting};
use super::{BucketFs, Caller, FsError};
use crate::crypto::{HeaderInfo, Object};
use crate::store::{PendingFile, Stat, TimeUpdate};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Component;
use std::sync::Arc;
use zeroize::Zeroizing;

/// Plaintext bytes copied per step.
const COPY_CHUNK: usize = 1 << 20;
/// Prefix of the stored `user.*` attributes that are carried over to the new object.
const USER_PREFIX: &[u8] = b"user.";

/// What a re-encryption did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reencryption {
    /// The object was rewritten under the new setting.
    Reencrypted,
    /// The object already was as asked: nothing was written.
    AlreadyMatching,
}

/// The new object, complete and durable in the temporary directory, not yet in place.
struct StagedObject<'a> {
    pending: PendingFile<'a>,
    object: Object<BackingFile>,
    /// An `O_PATH` descriptor of the new backing file (the inode's descriptor after the swap).
    path_fd: OwnedFd,
}

impl BucketFs {
    /// Re-encrypts an object under the setting `decide` picks from its current (authenticated)
    /// header, unless it already matches. Holds the object's write lock from the decision to
    /// the swap, so readers and writers of the file see the old or the new object, never a mix.
    /// On every error the object is unchanged.
    /// Reading the old object is a `Decrypt` and writing the new one a `GenerateDataKey` by
    /// `caller` when they are under a CMK.
    pub(super) fn reencrypt(
        &self,
        caller: Caller,
        inode: &Arc<Inode>,
        decide: impl FnOnce(&HeaderInfo) -> Result<SseSetting, FsError>,
    ) -> Result<Reencryption, FsError> {
        self.writable()?;
        let shared = self.acquire_object(caller, inode)?;
        let result = self.reencrypt_shared(caller, inode, &shared, decide);
        let released = self.release_object(inode);
        let outcome = result.map_err(|e| self.note_failed_reencryption(inode, e))?;
        released?;
        Ok(outcome)
    }

    /// Logs a re-encryption that failed for a reason of the store (a full disk, an I/O error,
    /// a damaged object) with the object's path; refusals of policy or keys are the caller's
    /// to see (and are audited where they concern a CMK).
    fn note_failed_reencryption(&self, inode: &Inode, error: FsError) -> FsError {
        let of_the_store = matches!(
            &error,
            FsError::Io(_) | FsError::Crypto(crate::crypto::CryptoError::Io(_))
        ) || error.is_integrity_failure();
        if of_the_store {
            log::warn!(
                "re-encrypting object {} failed, the object is unchanged: {error}",
                self.display_path(inode)
            );
        }
        error
    }

    fn reencrypt_shared(
        &self,
        caller: Caller,
        inode: &Arc<Inode>,
        shared: &OpenObject,
        decide: impl FnOnce(&HeaderInfo) -> Result<SseSetting, FsError>,
    ) -> Result<Reencryption, FsError> {
        let (outcome, old) = shared.replace(|old| {
            let setting = decide(old.info())?;
            let path = || self.display_path(inode);
            let user = KeyUse::new(caller, &path);
            let key = key_for_setting(self.keys.as_ref(), &setting, &user)
                .map_err(|e| key_refusal(&user, e))?;
            // An object of an older format is rewritten even under the same setting.
            // Version 2 moves forward with its next header write; version 1 is rewritten.
            let current_format = old.info().version != crate::crypto::FORMAT_V1;
            if current_format && already_matches(&old.info().key_ref, &key.key_ref) {
                return Ok((Reencryption::AlreadyMatching, None));
            }
            let before = self.backing().stat(inode.fd()?.as_fd())?;
            if before.nlink > 1 {
                return Err(FsError::MultipleLinks);
            }
            if before.nlink == 0 {
                return Err(FsError::NotFound);
            }
            let staged = self.stage(old, &before, key)?;
            let new = self.swap_in(inode, &before, staged)?;
            log::info!(
                "re-encrypted object {} under {}",
                self.display_path(inode),
                algorithm_name(setting.algorithm).unwrap_or("none")
            );
            Ok((Reencryption::Reencrypted, Some(new)))
        })?;
        if let Some(old) = old {
            // The old backing file is unlinked: empty it so its space comes back at once (the
            // inode may keep it referenced, see `Inode::repoint`).
            if let Err(e) = old.io().file.set_len(0) {
                log::warn!("cannot empty a replaced object: {e}");
            }
        }
        Ok(outcome)
    }

    /// Writes the plaintext of `old` into a new object under `key` in the temporary
    /// directory, with the old file's owner, mode and `user.*` attributes; closed and synced.
    fn stage(
        &self,
        old: &Object<BackingFile>,
        before: &Stat,
        key: super::policy::NewObjectKey,
    ) -> Result<StagedObject<'_>, FsError> {
        let (pending, file) = self.store.begin_reencrypt(before.mode & 0o7777)?;
        let mut new = Object::create(
            self.backing_file(file),
            &self.store_key,
            key.algorithm,
            key.key_ref,
            key.kek.as_ref(),
            old.info().block_size,
        )?;
        copy_plaintext(old, &mut new)?;
        let io = new.close()?;
        self.copy_metadata(old.io().file.as_fd(), io.file.as_fd(), before)?;
        io.file.sync_all()?;
        let path_fd = OwnedFd::from(self.backing().reopen(io.file.as_fd(), libc::O_PATH)?);
        let object = Object::open(io, &self.store_key, key.kek.as_ref())?;
        Ok(StagedObject {
            pending,
            object,
            path_fd,
        })
    }

    /// Owner, mode and the stored `user.*` attributes of the old backing file.
    fn copy_metadata(
        &self,
        old: BorrowedFd<'_>,
        new: BorrowedFd<'_>,
        before: &Stat,
    ) -> Result<(), FsError> {
        self.backing()
            .chown(new, Some(before.uid), Some(before.gid))?;
        // After chown, which may clear set-user-ID and set-group-ID bits.
        self.backing().chmod(new, before.mode & 0o7777)?;
        let names = self.backing().list_xattr(old)?;
        for name in names
            .split(|b| *b == 0)
            .filter(|n| n.starts_with(USER_PREFIX))
        {
            let name = OsStr::from_bytes(name);
            match self.backing().get_xattr(old, name) {
                Ok(value) => self.backing().set_xattr(new, name, &value, 0)?,
                Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Puts the staged object in the old one's place: exchange, check that what came out is
    /// this inode's file (else exchange back), repoint the inode, make it durable. After the
    /// exchange nothing undoes the swap: later failures are logged.
    fn swap_in(
        &self,
        inode: &Inode,
        before: &Stat,
        staged: StagedObject<'_>,
    ) -> Result<Object<BackingFile>, FsError> {
        let (dir, name) = self.parent_of(inode)?;
        staged.pending.exchange(dir.as_fd(), &name)?;
        let swapped_out = staged.pending.stat();
        let ours = swapped_out
            .as_ref()
            .is_ok_and(|st| st.dev == before.dev && st.ino == before.ino);
        if !ours {
            if let Err(e) = staged.pending.exchange(dir.as_fd(), &name) {
                log::error!(
                    "re-encryption of {} swapped with another file and could not swap back: {e}",
                    self.display_path(inode)
                );
            }
            return Err(FsError::ObjectMoved);
        }
        if let Err(e) = inode.repoint(staged.path_fd.as_fd()) {
            log::error!(
                "cannot repoint inode {} after re-encryption: {e}",
                inode.ino
            );
        }
        match self.backing().stat(staged.path_fd.as_fd()) {
            Ok(st) => self.inodes.alias(st.ino, inode.ino),
            Err(e) => log::warn!("cannot stat a re-encrypted object: {e}"),
        }
        // The swap is durable before the old object's name goes.
        let synced = self.store.sync_dir(dir.as_fd());
        drop(staged.pending);
        for result in [synced, self.store.sync_temp_dir()] {
            if let Err(e) = result {
                log::warn!("re-encryption of {}: {e}", self.display_path(inode));
            }
        }
        self.restore_times(inode, before);
        Ok(staged.object)
    }

    /// Puts back the access and modification times an object had before a re-encryption or
    /// rewrap (neither modifies it); a failure is only logged.
    pub(super) fn restore_times(&self, inode: &Inode, before: &Stat) {
        let (atime, mtime) = (TimeUpdate::At(before.atime), TimeUpdate::At(before.mtime));
        let kept = inode
            .fd()
            .and_then(|fd| self.backing().utimens(fd.as_fd(), Some(atime), Some(mtime)));
        if let Err(e) = kept {
            log::warn!("cannot keep the times of {}: {e}", self.display_path(inode));
        }
    }

    /// An `O_PATH` descriptor of the directory holding an object's backing file, and its name
    /// there: a name the kernel reached it by that still leads to it, else the path of its
    /// descriptor (stale when that name was replaced or unlinked while another link remains),
    /// checked too.
    fn parent_of(&self, inode: &Inode) -> Result<(OwnedFd, OsString), FsError> {
        if let Ok((dir, name)) = self.current_name(inode) {
            let dir = self
                .backing()
                .open_path_at(dir.fd()?.as_fd(), OsStr::new("."))?;
            return Ok((dir, name));
        }
        let target = self.backing().stat(inode.fd()?.as_fd())?;
        let (dir, name) = self.parent_by_path(inode)?;
        let names_target = self
            .backing()
            .stat_at(dir.as_fd(), &name)
            .is_ok_and(|s| s.dev == target.dev && s.ino == target.ino);
        if names_target {
            Ok((dir, name))
        } else {
            Err(FsError::NotFound)
        }
    }

    /// The directory and name from the path of the inode's descriptor, reached from the store
    /// root one component at a time.
    fn parent_by_path(&self, inode: &Inode) -> Result<(OwnedFd, OsString), FsError> {
        let path = self.backing().path_of(inode.fd()?.as_fd())?;
        let rel = path
            .strip_prefix(self.store.root())
            .map_err(|_| FsError::NotFound)?;
        let name = rel.file_name().ok_or(FsError::NotFound)?.to_os_string();
        let mut dir = self
            .backing()
            .open_path_at(self.store.root_fd(), OsStr::new("."))?;
        if let Some(parent) = rel.parent() {
            for component in parent.components() {
                let Component::Normal(part) = component else {
                    return Err(FsError::NotFound);
                };
                dir = self.backing().open_path_at(dir.as_fd(), part)?;
            }
        }
        Ok((dir, name))
    }
}

/// Copies every plaintext byte of `old` into `new`; runs of zeros stay holes.
fn copy_plaintext(old: &Object<BackingFile>, new: &mut Object<BackingFile>) -> Result<(), FsError> {
    let size = old.size();
    let mut buf = Zeroizing::new(vec![0u8; COPY_CHUNK]);
    let mut offset = 0u64;
    while offset < size {
        let want = usize::try_from(size - offset).map_or(COPY_CHUNK, |n| n.min(COPY_CHUNK));
        let got = old.read_at(offset, &mut buf[..want])?;
        if got != want {
            return Err(FsError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the object ended before its size",
            )));
        }
        if buf[..got].iter().any(|b| *b != 0) {
            new.write_at(offset, &buf[..got])?;
        }
        offset += got as u64;
    }
    new.set_size(size)?;
    Ok(())
}
