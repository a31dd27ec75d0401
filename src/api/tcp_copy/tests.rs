use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(dir: &Path, queue: usize) -> TcpCopyConfig {
    TcpCopyConfig {
        enabled: true,
        interval: 30,
        duration: 2,
        dir: Some(dir.to_path_buf()),
        queue,
        ..TcpCopyConfig::default()
    }
}

fn idle() -> UsageReader {
    Box::new(|| Some(Usage { cpu: 1.0, mem: 1.0 }))
}

fn counter(metrics: &Metrics, outcome: &'static str) -> u64 {
    metrics.tcp_copy_samples(outcome).get()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn bytes_read_in_the_window_are_dumped_untouched() {
    let dir = tempfile::tempdir().expect("temp dir");
    let metrics = Metrics::new();
    let copy = TcpCopy::with_usage(&config(dir.path(), 16), 4242, &metrics, idle()).expect("TCP copy starts");
    let (server, mut client) = tokio::io::duplex(64);
    let mut teed = copy.tee(server);
    client.write_all(b"hello ").await.expect("duplex I/O");
    let mut buf = [0u8; 6];
    teed.read_exact(&mut buf).await.expect("duplex I/O");
    assert_eq!(&buf, b"hello ");
    client.write_all(b"world").await.expect("duplex I/O");
    let mut buf = [0u8; 5];
    teed.read_exact(&mut buf).await.expect("duplex I/O");
    assert_eq!(&buf, b"world");
    // Writes pass through.
    teed.write_all(b"answer").await.expect("duplex I/O");
    let mut back = [0u8; 6];
    client.read_exact(&mut back).await.expect("duplex I/O");
    assert_eq!(&back, b"answer");

    wait_for("2 samples written", || counter(&metrics, "written") == 2).await;
    let text = std::fs::read_to_string(dir.path().join(TcpCopyConfig::FILE_NAME)).expect("dump file");
    let lines: Vec<DumpLine> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a dump line"))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    let bytes: Vec<u8> = lines
        .iter()
        .flat_map(|l| {
            base64::engine::general_purpose::STANDARD
                .decode(&l.bytes)
                .expect("base64")
        })
        .collect();
    assert_eq!(bytes, b"hello world");
    assert_eq!((lines[0].conn, lines[0].port, lines[0].offset), (1, 4242, 0));
    assert_eq!(lines[1].offset, 6);
    assert!(
        lines[0].time.ends_with('Z') && lines[0].time.len() == 27,
        "{}",
        lines[0].time
    );
    assert!(lines[0].window <= lines[0].time);
    assert_eq!(counter(&metrics, "dropped"), 0);
    // A second connection has the next number.
    assert_eq!(copy.tee(tokio::io::empty()).tap.as_ref().expect("teed").conn, 2);
}

#[tokio::test]
async fn nothing_is_sampled_over_a_ceiling() {
    let dir = tempfile::tempdir().expect("temp dir");
    let metrics = Metrics::new();
    let busy: UsageReader = Box::new(|| Some(Usage { cpu: 95.0, mem: 10.0 }));
    let copy = TcpCopy::with_usage(&config(dir.path(), 16), 1, &metrics, busy).expect("TCP copy starts");
    assert_eq!(copy.sampling(), None);
    let unknown: UsageReader = Box::new(|| None);
    let copy = TcpCopy::with_usage(&config(dir.path(), 16), 1, &metrics, unknown).expect("TCP copy starts");
    assert_eq!(copy.sampling(), None);
    let copy = TcpCopy::with_usage(&config(dir.path(), 16), 1, &metrics, idle()).expect("TCP copy starts");
    assert_eq!(copy.sampling(), Some(0));
}

#[test]
fn the_window_is_the_first_duration_of_each_interval() {
    let dir = tempfile::tempdir().expect("temp dir");
    let metrics = Metrics::new();
    let mut copy = TcpCopy::with_usage(&config(dir.path(), 16), 1, &metrics, idle()).expect("TCP copy starts");
    let copy = Arc::get_mut(&mut copy).expect("one owner");
    let now = Instant::now();
    for (ago, expected) in [
        (0, Some(0)),
        (1, Some(0)),
        (3, None),
        (29, None),
        (31, Some(1)),
        (33, None),
        (61, Some(2)),
    ] {
        copy.started = now - Duration::from_secs(ago);
        assert_eq!(copy.sampling(), expected, "{ago}s after start");
    }
}

#[test]
fn a_full_queue_drops_and_counts_without_waiting() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The writer blocks on a FIFO nobody reads.
    let fifo = dir.path().join(TcpCopyConfig::FILE_NAME);
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let metrics = Metrics::new();
    let copy = TcpCopy::with_usage(&config(dir.path(), 4), 1, &metrics, idle()).expect("TCP copy starts");
    let started = Instant::now();
    for _ in 0..100 {
        copy.offer(Sample {
            time: SystemTime::now(),
            conn: 1,
            offset: 0,
            window: 0,
            bytes: vec![1, 2, 3],
        });
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // At most the writer's batch (its first sample and a queue's worth)
    // and a queue's worth got through.
    let dropped = counter(&metrics, "dropped");
    assert!(dropped >= 100 - 9, "{dropped}");
    assert_eq!(counter(&metrics, "written"), 0);
    // A reader for a moment unblocks the writer, so that its thread ends.
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::OpenOptions::new().read(true).custom_flags(0o4000).open(&fifo);
}

#[tokio::test]
async fn a_full_disk_drops_and_counts() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::os::unix::fs::symlink("/dev/full", dir.path().join(TcpCopyConfig::FILE_NAME)).expect("symlink");
    let metrics = Metrics::new();
    let copy = TcpCopy::with_usage(&config(dir.path(), 16), 1, &metrics, idle()).expect("TCP copy starts");
    let (server, mut client) = tokio::io::duplex(64);
    let mut teed = copy.tee(server);
    for _ in 0..3 {
        client.write_all(b"x").await.expect("duplex I/O");
        let mut buf = [0u8; 1];
        teed.read_exact(&mut buf).await.expect("duplex I/O");
    }
    wait_for("3 samples dropped", || counter(&metrics, "dropped") == 3).await;
    assert_eq!(counter(&metrics, "written"), 0);
}

#[test]
fn proc_files_parse() {
    let stat = "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
    assert_eq!(cpu_times(stat), Some((200, 1000)));
    assert_eq!(cpu_times("cpu  x y\n"), None);
    assert_eq!(cpu_times(""), None);
    let meminfo = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\n";
    assert_eq!(memory_percent(meminfo), Some(75.0));
    assert_eq!(memory_percent("MemTotal: 0 kB\nMemAvailable: 0 kB\n"), Some(0.0));
    assert_eq!(memory_percent("MemTotal: 10 kB\nMemAvailable: 20 kB\n"), None);
    if Path::new("/proc/stat").exists() {
        let mut cpu = CpuMeter::default();
        let first = cpu.read().expect("CPU use");
        assert!((0.0..=100.0).contains(&first), "{first}");
        assert!(memory_use().is_some_and(|m| (0.0..=100.0).contains(&m)));
    }
}
