//! Throughput of the block format: sealing and opening single 4 KiB blocks, and writing and
//! reading 1 MiB through an `Object` on memory (no disk). Run with `cargo bench --bench blocks`.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ssefs::crypto::{
    Algorithm, BlockCipher, DEFAULT_BLOCK_SIZE, FORMAT_VERSION, Key256, KeyRef, MemoryIo, Object,
    StoreKey,
};
use std::hint::black_box;
use std::time::Duration;

const BLOCK: usize = DEFAULT_BLOCK_SIZE as usize;
const MIB: usize = 1 << 20;

fn block_cipher() -> BlockCipher {
    BlockCipher::new(
        FORMAT_VERSION,
        &Key256::from_bytes(&[1u8; 32]).unwrap(),
        &store_key(),
        &[2u8; 16],
        true,
    )
}

fn blocks(c: &mut Criterion) {
    let cipher = block_cipher();
    let iv = [3u8; 16];
    let mut group = c.benchmark_group("block");
    group.throughput(Throughput::Bytes(BLOCK as u64));

    let mut data = vec![0x5au8; BLOCK];
    group.bench_function("seal 4 KiB", |b| {
        b.iter(|| black_box(cipher.seal(black_box(7), 1, &iv, &mut data)))
    });

    let mut sealed = vec![0x5au8; BLOCK];
    let slot = cipher.seal(7, 1, &iv, &mut sealed);
    let mut work = sealed.clone();
    group.bench_function("open 4 KiB", |b| {
        b.iter(|| {
            work.copy_from_slice(&sealed);
            black_box(cipher.open(black_box(7), &slot, &mut work).unwrap())
        })
    });

    // The two primitives alone, as measured on the same machine at the same time.
    let mac = <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(&[5u8; 32]).unwrap();
    group.bench_function("baseline HMAC-SHA256 4 KiB", |b| {
        b.iter(|| {
            let mut m = mac.clone();
            hmac::Mac::update(&mut m, black_box(&data));
            black_box(hmac::Mac::finalize(m))
        })
    });
    let aes = <aes::Aes256 as aes::cipher::KeyInit>::new(&[6u8; 32].into());
    group.bench_function("baseline AES-256-CTR 4 KiB", |b| {
        b.iter(|| {
            use aes::cipher::{InnerIvInit, StreamCipher, StreamCipherCoreWrapper};
            let core = ctr::CtrCore::<&aes::Aes256, ctr::flavors::Ctr128BE>::inner_iv_init(
                &aes,
                &iv.into(),
            );
            StreamCipherCoreWrapper::from_core(core).apply_keystream(black_box(&mut data));
        })
    });

    group.throughput(Throughput::Bytes(2 * BLOCK as u64));
    group.bench_function("seal+open 4 KiB", |b| {
        b.iter(|| {
            let slot = cipher.seal(black_box(7), 1, &iv, &mut data);
            black_box(cipher.open(7, &slot, &mut data).unwrap())
        })
    });
    group.finish();
}

fn new_object() -> Object<MemoryIo> {
    let kek = Key256::from_bytes(&[4u8; 32]).unwrap();
    Object::create(
        MemoryIo::default(),
        &store_key(),
        Algorithm::Aes256,
        KeyRef::Master { version: 1 },
        Some(&kek),
        DEFAULT_BLOCK_SIZE,
    )
    .unwrap()
}

fn objects(c: &mut Criterion) {
    let data = vec![0xa5u8; MIB];
    let mut group = c.benchmark_group("object");
    group.throughput(Throughput::Bytes(MIB as u64));

    group.bench_function("write 1 MiB to a new object", |b| {
        b.iter_batched(
            new_object,
            |mut object| {
                object.write_at(0, &data).unwrap();
                object
            },
            BatchSize::LargeInput,
        )
    });

    let mut object = new_object();
    object.write_at(0, &data).unwrap();
    group.bench_function("overwrite 1 MiB", |b| {
        b.iter(|| object.write_at(0, black_box(&data)).unwrap())
    });

    let mut out = vec![0u8; MIB];
    group.bench_function("read 1 MiB", |b| {
        b.iter(|| black_box(object.read_at(0, &mut out).unwrap()))
    });

    let mut small = vec![0u8; 128 << 10];
    group.throughput(Throughput::Bytes(small.len() as u64));
    group.bench_function("read 128 KiB at an odd offset", |b| {
        b.iter(|| black_box(object.read_at(12_345, &mut small).unwrap()))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = blocks, objects
}
criterion_main!(benches);

/// A fixed store key: these tests do not need a keystore.
fn store_key() -> StoreKey {
    StoreKey::new([0x70; 16], Key256::from_bytes(&[0x71; 32]).unwrap())
}
