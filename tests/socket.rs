//! The socket text source reads lines from a TCP server on loopback until it closes.

use std::io::Write;
use std::net::TcpListener;

use flowlab::api::Env;
use flowlab::connectors::{CollectSink, SocketSource};
use flowlab::runtime::{JobConfig, execute};
use flowlab::time::WatermarkStrategy;

#[test]
fn socket_lines_become_events_in_order() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (mut connection, _) = listener.accept().unwrap();
        for chunk in ["a,1000,1\nb,2", "000,2\r\n", "c,500,3\n", "d,4000,4"] {
            connection.write_all(chunk.as_bytes()).unwrap();
            connection.flush().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    });
    let out = CollectSink::new();
    let sink = out.clone();
    execute(&JobConfig::threads("socket", 2), move |env: &Env| {
        env.source(SocketSource::new(&address), WatermarkStrategy::bounded(0)).sink(sink.clone());
    })
    .expect("job runs");
    server.join().unwrap();
    let mut records = out.records();
    records.sort_by_key(|record| record.value.line);
    let seen: Vec<(String, i64, i64, i64)> =
        records.into_iter().map(|r| (r.value.key, r.time_ms, r.watermark_ms, r.value.value)).collect();
    assert_eq!(
        seen,
        vec![
            ("a".to_string(), 1000, i64::MIN, 1),
            ("b".to_string(), 2000, 999, 2),
            ("c".to_string(), 500, 1999, 3),
            ("d".to_string(), 4000, 1999, 4),
        ]
    );
}

#[test]
fn a_refused_connection_is_an_error_naming_the_address() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let result = execute(&JobConfig::threads("socket", 1), move |env: &Env| {
        env.source(SocketSource::new(&address), WatermarkStrategy::bounded(0)).sink(CollectSink::new());
    });
    assert!(result.expect_err("nothing listens").to_string().contains("cannot connect to 127.0.0.1:"));
}
