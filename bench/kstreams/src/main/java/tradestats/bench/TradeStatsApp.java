package tradestats.bench;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.kstream.Windowed;
import org.apache.kafka.streams.kstream.WindowedSerdes;
import org.apache.kafka.streams.state.WindowStore;

/**
 * Contender (d): the talk's topology (stream, groupByKey, 5 s windows advancing 1 s, aggregate,
 * toStream, mapValues to the average, to the output topic with the windowed key serde).
 *
 * <p>Written for the benchmark only: the statistics are the ones tradestats emits (count, sum,
 * min, max, average, volume, VWAP, type) so every contender's output can be checked against the
 * same oracle. Without {@code --suppress} Kafka Streams forwards updates as its record cache
 * flushes them (every commit), which is what the talk's application does.
 *
 * <p>Written in the talk's style (Gson, a mutable aggregate) rather than tuned.
 *
 * <p>Arguments: {@code --bootstrap --app-id --input --output --state-dir [--commit-ms]
 * [--suppress]}, and any number of {@code --streams.<config> <value>}, passed to Kafka Streams as
 * {@code <config>} (the recovery benchmark sets its changelog's topic configs this way).
 */
public final class TradeStatsApp {
  static final long WINDOW_MS = 5000;
  static final long ADVANCE_MS = 1000;
  static final Gson GSON = new GsonBuilder().serializeNulls().create();
  /** Printed once, at the first record: the harness's start of the throughput clock. */
  static volatile boolean seenFirst = false;

  /** One trade, as the talk's demo writes it. */
  static final class Trade {
    String type;
    String ticker;
    double price;
    int size;
  }

  /** The windowed aggregate held in the state store. */
  static final class TradeStats {
    String type;
    String ticker;
    int countTrades;
    double sumPrice;
    double minPrice;
    double maxPrice;
    long volume;
    double notional;

    TradeStats add(Trade trade) {
      if (countTrades == 0) {
        type = trade.type;
        ticker = trade.ticker;
        minPrice = trade.price;
        maxPrice = trade.price;
      } else {
        if (!trade.type.equals(type)) {
          type = "MIXED";
        }
        minPrice = Math.min(minPrice, trade.price);
        maxPrice = Math.max(maxPrice, trade.price);
      }
      countTrades += 1;
      sumPrice += trade.price;
      volume += trade.size;
      notional += trade.price * trade.size;
      return this;
    }
  }

  /** The output value: the same fields as tradestats' WindowStats. */
  static final class WindowResult {
    String ticker;
    String type;
    int countTrades;
    double sumPrice;
    double minPrice;
    double maxPrice;
    double avgPrice;
    long volume;
    Double vwap;
    long windowStart;
    long windowEnd;

    static WindowResult of(Windowed<String> key, TradeStats stats) {
      WindowResult result = new WindowResult();
      result.ticker = stats.ticker;
      result.type = stats.type;
      result.countTrades = stats.countTrades;
      result.sumPrice = stats.sumPrice;
      result.minPrice = stats.minPrice;
      result.maxPrice = stats.maxPrice;
      result.avgPrice = stats.sumPrice / stats.countTrades; // computeAvgPrice()
      result.volume = stats.volume;
      result.vwap = stats.volume == 0 ? null : stats.notional / stats.volume;
      result.windowStart = key.window().start();
      result.windowEnd = key.window().end();
      return result;
    }
  }

  /** Appends {@code <name> <epoch ms>} to the file named by BENCH_EVENTS (see bench/process.py). */
  static void reportEvent(String name) {
    String path = System.getenv("BENCH_EVENTS");
    if (path == null) {
      return;
    }
    String line = name + " " + System.currentTimeMillis() + "\n";
    try {
      Files.writeString(
          Path.of(path), line, StandardOpenOption.CREATE, StandardOpenOption.APPEND);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  static <T> Serde<T> jsonSerde(Class<T> type) {
    Serializer<T> serializer =
        (topic, value) -> value == null ? null : GSON.toJson(value).getBytes(StandardCharsets.UTF_8);
    Deserializer<T> deserializer =
        (topic, bytes) ->
            bytes == null ? null : GSON.fromJson(new String(bytes, StandardCharsets.UTF_8), type);
    return Serdes.serdeFrom(serializer, deserializer);
  }

  static Map<String, String> parseArgs(String[] args) {
    Map<String, String> options = new HashMap<>();
    for (int i = 0; i < args.length; i++) {
      String name = args[i];
      if (name.equals("--suppress")) {
        options.put("suppress", "true");
      } else if (name.startsWith("--") && i + 1 < args.length) {
        options.put(name.substring(2), args[++i]);
      } else {
        throw new IllegalArgumentException("unexpected argument " + name);
      }
    }
    for (String required : new String[] {"bootstrap", "app-id", "input", "output", "state-dir"}) {
      if (!options.containsKey(required)) {
        throw new IllegalArgumentException("missing --" + required);
      }
    }
    return options;
  }

  public static void main(String[] args) throws InterruptedException {
    Map<String, String> options = parseArgs(args);
    Serde<Trade> tradeSerde = jsonSerde(Trade.class);
    Serde<TradeStats> statsSerde = jsonSerde(TradeStats.class);
    Serde<WindowResult> resultSerde = jsonSerde(WindowResult.class);

    StreamsBuilder builder = new StreamsBuilder();
    KTable<Windowed<String>, TradeStats> windows =
        builder.stream(options.get("input"), Consumed.with(Serdes.String(), tradeSerde))
            .peek(
                (key, value) -> {
                  if (!seenFirst) {
                    seenFirst = true;
                    reportEvent("first-record");
                  }
                })
            .groupByKey(Grouped.with(Serdes.String(), tradeSerde))
            .windowedBy(
                TimeWindows.ofSizeWithNoGrace(Duration.ofMillis(WINDOW_MS))
                    .advanceBy(Duration.ofMillis(ADVANCE_MS)))
            .aggregate(
                TradeStats::new,
                (ticker, trade, stats) -> stats.add(trade),
                Materialized.<String, TradeStats, WindowStore<Bytes, byte[]>>as("trade-aggregates")
                    .withKeySerde(Serdes.String())
                    .withValueSerde(statsSerde));
    if (options.containsKey("suppress")) {
      windows = windows.suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()));
    }
    windows
        .toStream()
        .mapValues(WindowResult::of)
        .to(
            options.get("output"),
            Produced.with(
                WindowedSerdes.timeWindowedSerdeFrom(String.class, WINDOW_MS), resultSerde));

    Properties props = new Properties();
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, options.get("app-id"));
    props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, options.get("bootstrap"));
    props.put(StreamsConfig.STATE_DIR_CONFIG, options.get("state-dir"));
    props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, options.getOrDefault("commit-ms", "1000"));
    props.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
    props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    options.forEach(
        (name, value) -> {
          if (name.startsWith("streams.")) {
            props.put(name.substring("streams.".length()), value);
          }
        });

    KafkaStreams streams = new KafkaStreams(builder.build(), props);
    RestoreEvents.attach(streams);
    CountDownLatch stopped = new CountDownLatch(1);
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  streams.close(Duration.ofSeconds(20));
                  stopped.countDown();
                }));
    streams.setUncaughtExceptionHandler(
        exception -> {
          exception.printStackTrace();
          return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler
              .StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
    streams.start();
    stopped.await();
  }
}
