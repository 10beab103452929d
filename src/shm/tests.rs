use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// A POSIX shared-memory object made through /dev/shm (what `shm_open`
/// uses on Linux), removed on drop.
struct Object {
    key: String,
}

impl Object {
    fn new(contents: &[u8]) -> Object {
        static N: AtomicUsize = AtomicUsize::new(0);
        let key = format!(
            "/nereid-shm-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        std::fs::write(format!("/dev/shm{key}"), contents).expect("create shm object");
        Object { key }
    }

    fn read(&self) -> Vec<u8> {
        std::fs::read(format!("/dev/shm{}", self.key)).unwrap()
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/dev/shm{}", self.key));
    }
}

/// GPU memory stood in for by host memory.
struct FakeCuda {
    ptr: u64,
    bytes: Mutex<Vec<u8>>,
}

impl CudaMapping for FakeCuda {
    fn ptr(&self) -> u64 {
        self.ptr
    }
    fn allocation_len(&self) -> usize {
        self.bytes.lock().unwrap().len()
    }
    fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.bytes.lock().unwrap()[offset..offset + data.len()].copy_from_slice(data);
        Ok(())
    }
}

fn registry() -> Registry {
    Registry::new(
        true,
        Box::new(|device, handle| {
            if device != 0 {
                return Err(Error::invalid_arg(format!("no GPU {device}")));
            }
            Ok(Box::new(FakeCuda {
                ptr: 0x7000_0000,
                bytes: Mutex::new(vec![0; usize::from(handle[0])]),
            }))
        }),
    )
}

fn host(input: InputBytes) -> Bytes {
    match input {
        InputBytes::Host(b) => b,
        InputBytes::Device(d) => panic!("expected host bytes, got {d:?}"),
    }
}

#[test]
fn system_regions_read_and_write_in_place() {
    let data: Vec<u8> = (0..=255).collect();
    let object = Object::new(&data);
    let r = registry();
    r.register_system("in", &object.key, 16, 64).unwrap();
    let bytes = host(r.input("in", 8, 4).unwrap());
    assert_eq!(&bytes[..], &[24, 25, 26, 27]);
    let sink = r.sink("in", 60, 4).unwrap();
    assert!(sink.device().is_none());
    sink.write(&[1, 2, 3]).unwrap();
    assert_eq!(&object.read()[76..80], &[1, 2, 3, 79]);
    assert!(sink.write(&[0; 5]).is_err());
}

#[test]
fn a_window_may_start_anywhere_in_the_object() {
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let object = Object::new(&data);
    let r = registry();
    r.register_system("odd", &object.key, 4097, 100).unwrap();
    assert_eq!(&host(r.input("odd", 0, 3).unwrap())[..], &data[4097..4100]);
}

#[test]
fn registration_errors_are_clear() {
    let object = Object::new(&[0; 128]);
    let r = registry();
    let e = r
        .register_system("x", "/nereid-no-such-key", 0, 4)
        .unwrap_err();
    assert_eq!(
        e.message(),
        "Unable to open shared memory region: '/nereid-no-such-key'"
    );
    let e = r.register_system("x", &object.key, 100, 29).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArg);
    assert!(e.message().contains("invalid args"), "{e}");
    let e = r
        .register_system("x", &object.key, u64::MAX, 2)
        .unwrap_err();
    assert!(e.message().contains("invalid args"), "{e}");
    let e = r.register_system("x", &object.key, 0, 0).unwrap_err();
    assert!(
        e.message().contains("byte_size must be greater than 0"),
        "{e}"
    );
    assert!(r.register_system("", &object.key, 0, 4).is_err());
    let e = r.register_system("x", "///", 0, 4).unwrap_err();
    assert!(e.message().contains("invalid shm key"), "{e}");
    let e = r
        .register_system("x", "/triton_python_backend_shm_region_1", 0, 4)
        .unwrap_err();
    assert!(e.message().contains("reserved prefix"), "{e}");
    r.register_system("x", &object.key, 0, 128).unwrap();
    let e = r.register_system("x", &object.key, 0, 4).unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert_eq!(e.message(), "shared memory region 'x' already in manager");
}

#[test]
fn registration_checks_run_in_tritons_order() {
    let object = Object::new(&[0; 64]);
    let r = registry();
    // An empty window past the end is out of bounds first (Triton checks
    // offset + byte_size against the object before anything else about
    // the window), so it reads "invalid args" like every bound error.
    let e = r.register_system("x", &object.key, 65, 0).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArg);
    assert_eq!(
        e.message(),
        format!(
            "failed to register shared memory region 'x': invalid args: offset 65 + byte_size 0 exceeds the 64 bytes of '{}'",
            object.key
        )
    );
    // A key that does not open is reported before any bound is looked at.
    let e = r
        .register_system("x", "/nereid-no-such-key", u64::MAX, 0)
        .unwrap_err();
    assert_eq!(
        e.message(),
        "Unable to open shared memory region: '/nereid-no-such-key'"
    );
    // A name already registered is reported before the key is opened.
    r.register_system("x", &object.key, 0, 64).unwrap();
    let e = r
        .register_system("x", "/nereid-no-such-key", 0, 4)
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
}

#[test]
fn a_large_offset_window_round_trips() {
    // Triton's test_large_shm_register_offset: a window one page before
    // the end of a 1024-page object; the input is read and the output
    // written at the window, not at the object's start.
    let page = 4096;
    let object = Object::new(&vec![0u8; page * 1024]);
    let r = registry();
    let offset = (page * 1023) as u64;
    r.register_system("w", &object.key, offset, 64).unwrap();
    let sink = r.sink("w", 0, 64).unwrap();
    sink.write(&[7; 64]).unwrap();
    let contents = object.read();
    assert!(contents[..page * 1023].iter().all(|&b| b == 0));
    assert_eq!(&contents[page * 1023..page * 1023 + 64], &[7; 64]);
    assert_eq!(&host(r.input("w", 0, 64).unwrap())[..], &[7; 64]);
}

#[test]
fn lookups_check_every_bound() {
    let object = Object::new(&[0; 64]);
    let r = registry();
    r.register_system("r", &object.key, 0, 64).unwrap();
    let msg = |e: Error| e.message().to_owned();
    assert_eq!(
        msg(r.input("nope", 0, 4).unwrap_err()),
        "Unable to find shared memory region: 'nope'"
    );
    assert_eq!(
        msg(r.input("r", 64, 0).unwrap_err()),
        "Invalid offset for shared memory region: 'r'"
    );
    assert_eq!(
        msg(r.input("r", 60, 5).unwrap_err()),
        "Invalid offset + byte size for shared memory region: 'r'"
    );
    assert!(msg(r.sink("r", 1, u64::MAX).err().unwrap()).starts_with("Integer overflow detected"));
    assert_eq!(host(r.input("r", 60, 4).unwrap()).len(), 4);
}

#[test]
fn status_and_unregister_follow_triton() {
    let object = Object::new(&[0; 64]);
    let r = registry();
    r.register_system("a", &object.key, 8, 16).unwrap();
    r.register_cuda("g", &[32; 64], 0, 32).unwrap();
    let all = r.status(Kind::System, None).unwrap();
    assert_eq!(
        all,
        vec![RegionStatus {
            name: "a".into(),
            key: object.key.clone(),
            offset: 8,
            device_id: 0,
            byte_size: 16
        }]
    );
    assert_eq!(r.status(Kind::Cuda, Some("g")).unwrap()[0].byte_size, 32);
    assert_eq!(
        r.status(Kind::System, Some("zz")).unwrap_err().message(),
        "Unable to find system shared memory region: 'zz'"
    );
    assert_eq!(
        r.status(Kind::Cuda, Some("zz")).unwrap_err().message(),
        "Unable to find cuda shared memory region: 'zz'"
    );
    assert!(
        r.status(Kind::System, Some("g"))
            .unwrap_err()
            .message()
            .contains("registered as CUDA shared memory")
    );
    // Unregistering a CUDA region through the system endpoint is a no-op.
    r.unregister(Kind::System, Some("g")).unwrap();
    assert_eq!(r.status(Kind::Cuda, None).unwrap().len(), 1);
    r.unregister(Kind::Cuda, None).unwrap();
    assert!(r.status(Kind::Cuda, None).unwrap().is_empty());
    assert_eq!(r.status(Kind::System, None).unwrap().len(), 1);
}

#[test]
fn inputs_outlive_their_region_name() {
    let object = Object::new(&[7; 32]);
    let r = registry();
    r.register_system("a", &object.key, 0, 32).unwrap();
    let bytes = host(r.input("a", 0, 32).unwrap());
    r.unregister(Kind::System, Some("a")).unwrap();
    assert!(r.input("a", 0, 1).is_err());
    assert_eq!(&bytes[..], &[7; 32]);
}

#[test]
fn cuda_regions_give_device_bytes_and_check_the_allocation() {
    let r = registry();
    let e = r.register_cuda("g", &[8; 10], 0, 8).unwrap_err();
    assert!(e.message().contains("64 bytes"), "{e}");
    // Triton's order and wording: the handle is tried before the name and
    // the size, and a handle that does not open is its generic
    // "invalid args" (tritonclient's aio test matches on it).
    let e = r.register_cuda("", &[], 0, 0).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArg);
    assert!(
        e.message()
            .contains("failed to register shared memory region: invalid args"),
        "{e}"
    );
    let e = r.register_cuda("", &[16; 64], 0, 16).unwrap_err();
    assert!(e.message().contains("'region name' is necessary"), "{e}");
    let e = r.register_cuda("g", &[8; 64], 3, 8).unwrap_err();
    assert!(e.message().contains("no GPU 3"), "{e}");
    let e = r.register_cuda("g", &[8; 64], 0, 9).unwrap_err();
    assert!(e.message().contains("exceeds"), "{e}");
    r.register_cuda("g", &[16; 64], 0, 16).unwrap();
    match r.input("g", 4, 8).unwrap() {
        InputBytes::Device(d) => assert_eq!((d.device(), d.ptr(), d.len()), (0, 0x7000_0004, 8)),
        InputBytes::Host(_) => panic!("expected device bytes"),
    }
    let sink = r.sink("g", 8, 8).unwrap();
    assert_eq!(sink.device().unwrap().ptr(), 0x7000_0008);
    sink.write(&[1, 2]).unwrap();
}

#[test]
fn everything_but_status_is_refused_while_disabled() {
    let r = Registry::new(false, Box::new(|_, _| Err(Error::internal("unused"))));
    let object = Object::new(&[0; 8]);
    let e = r.register_system("a", &object.key, 0, 8).unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Unsupported, DISABLED));
    assert_eq!(
        r.register_cuda("a", &[0; 64], 0, 8).unwrap_err().message(),
        DISABLED
    );
    assert_eq!(
        r.unregister(Kind::System, None).unwrap_err().message(),
        DISABLED
    );
    assert!(r.status(Kind::System, None).unwrap().is_empty());
}
