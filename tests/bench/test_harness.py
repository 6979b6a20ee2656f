from bench.run import parse_wrk

WRK_REPORT = """Running 2s test @ http://127.0.0.1:8765/bench/ceiling/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     9.50ms    2.14ms  17.06ms   90.99%
    Req/Sec     1.61k   210.00     1.80k    70.00%
  Latency Distribution
     50%    9.28ms
     75%   10.01ms
     90%   11.50ms
     99%    1.20s
  3208 requests in 2.00s, 0.90MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 4
Requests/sec:   1604.12
Transfer/sec:    460.00KB
"""


def test_wrk_report_is_read_from_the_latency_distribution():
    rps, p50, p99, failed = parse_wrk(WRK_REPORT)
    assert rps == 1604.12
    assert p50 == 9.28
    assert p99 == 1200.0
    assert failed == 7
