package tradestats.bench;

import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.processor.StateRestoreListener;

/**
 * Reports state restores and readiness as benchmark events (see {@link TradeStatsApp#reportEvent}),
 * for the recovery benchmark (bench/recovery/kstreams.py): {@code restore-start:<partition>},
 * {@code restore-end:<partition>:<records restored>} for each changelog partition restored, and
 * {@code running} each time the instance becomes RUNNING.
 */
final class RestoreEvents {
  private RestoreEvents() {}

  static void attach(KafkaStreams streams) {
    streams.setGlobalStateRestoreListener(
        new StateRestoreListener() {
          @Override
          public void onRestoreStart(
              TopicPartition partition, String store, long startingOffset, long endingOffset) {
            TradeStatsApp.reportEvent("restore-start:" + partition.partition());
          }

          @Override
          public void onBatchRestored(
              TopicPartition partition, String store, long batchEndOffset, long restored) {}

          @Override
          public void onRestoreEnd(TopicPartition partition, String store, long totalRestored) {
            TradeStatsApp.reportEvent(
                "restore-end:" + partition.partition() + ":" + totalRestored);
          }
        });
    streams.setStateListener(
        (state, previous) -> {
          if (state == KafkaStreams.State.RUNNING) {
            TradeStatsApp.reportEvent("running");
          }
        });
  }
}
