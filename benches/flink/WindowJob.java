// The Apache Flink 2.3 DataStream job that `flowlab window --window tumbling:10s` is compared
// with (book: "Benchmarking windows"; run it with run.sh next to this file). Same semantics:
// bounded out-of-orderness 2 s (Flink's max_ts - 2000 - 1), tumbling 10 s event-time windows
// keyed by the first field, count and sum of the third, one line `key,start,end,count,sum` per
// firing; late elements are dropped (flowlab counts them). Sorted, its output is byte for byte
// flowlab's without the header. Not built by cargo; needs a JDK 17+.
import java.io.BufferedWriter;
import java.io.FileWriter;
import java.io.IOException;
import java.time.Duration;

import org.apache.flink.api.common.JobExecutionResult;
import org.apache.flink.api.common.RuntimeExecutionMode;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.api.java.tuple.Tuple3;
import org.apache.flink.connector.file.src.FileSource;
import org.apache.flink.connector.file.src.reader.TextLineInputFormat;
import org.apache.flink.core.fs.Path;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.util.Collector;

public class WindowJob {
    public static void main(String[] args) throws Exception {
        String input = args[0];
        String output = args[1];
        int parallelism = Integer.parseInt(args[2]);

        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.setRuntimeMode(RuntimeExecutionMode.STREAMING);
        env.setParallelism(parallelism);

        FileSource<String> source =
                FileSource.forRecordStreamFormat(new TextLineInputFormat(), new Path(input)).build();

        env.fromSource(source, WatermarkStrategy.noWatermarks(), "csv")
                .map(line -> {
                    int a = line.indexOf(',');
                    int b = line.indexOf(',', a + 1);
                    return Tuple3.of(line.substring(0, a),
                            Long.parseLong(line.substring(a + 1, b)),
                            Long.parseLong(line.substring(b + 1)));
                })
                .returns(Types.TUPLE(Types.STRING, Types.LONG, Types.LONG))
                .assignTimestampsAndWatermarks(
                        WatermarkStrategy.<Tuple3<String, Long, Long>>forBoundedOutOfOrderness(Duration.ofSeconds(2))
                                .withTimestampAssigner((e, ts) -> e.f1))
                .keyBy(t -> t.f0)
                .window(TumblingEventTimeWindows.of(Duration.ofSeconds(10)))
                .aggregate(new CountSum(), new Emit())
                .sinkTo(new LineSink(output));

        JobExecutionResult r = env.execute("window-bench");
        System.out.println("NET_RUNTIME_MS " + r.getNetRuntime());
    }

    /** accumulator/result: (count, sum) */
    public static class CountSum implements AggregateFunction<Tuple3<String, Long, Long>, Tuple2<Long, Long>, Tuple2<Long, Long>> {
        public Tuple2<Long, Long> createAccumulator() { return Tuple2.of(0L, 0L); }
        public Tuple2<Long, Long> add(Tuple3<String, Long, Long> v, Tuple2<Long, Long> acc) {
            return Tuple2.of(acc.f0 + 1, acc.f1 + v.f2);
        }
        public Tuple2<Long, Long> getResult(Tuple2<Long, Long> acc) { return acc; }
        public Tuple2<Long, Long> merge(Tuple2<Long, Long> a, Tuple2<Long, Long> b) {
            return Tuple2.of(a.f0 + b.f0, a.f1 + b.f1);
        }
    }

    public static class Emit extends ProcessWindowFunction<Tuple2<Long, Long>, String, String, TimeWindow> {
        @Override
        public void process(String key, Context ctx, Iterable<Tuple2<Long, Long>> in, Collector<String> out) {
            Tuple2<Long, Long> r = in.iterator().next();
            TimeWindow w = ctx.window();
            out.collect(key + "," + w.getStart() + "," + w.getEnd() + "," + r.f0 + "," + r.f1);
        }
    }

    /** Sink V2: one BufferedWriter per subtask, file = output + "." + subtaskIndex */
    public static class LineSink implements Sink<String> {
        private final String base;
        public LineSink(String base) { this.base = base; }
        @Override
        public SinkWriter<String> createWriter(WriterInitContext ctx) throws IOException {
            final BufferedWriter w = new BufferedWriter(
                    new FileWriter(base + "." + ctx.getTaskInfo().getIndexOfThisSubtask()), 1 << 16);
            return new SinkWriter<String>() {
                public void write(String s, Context c) throws IOException { w.write(s); w.write('\n'); }
                public void flush(boolean endOfInput) throws IOException { w.flush(); }
                public void close() throws IOException { w.close(); }
            };
        }
    }
}
