package starling;

import java.io.FilterOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.BoltConnectorInternalSettings;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.graphdb.GraphDatabaseService;
import org.neo4j.io.ByteUnit;
import org.neo4j.logging.Level;
import org.neo4j.logging.log4j.Log4jLogProvider;

/**
 * Embedded Neo4j (community) with the Bolt connector enabled, for tests.
 *
 * <p>Usage: {@code Neo4jTestServer DIR PORT [HOST]}. {@code DIR} is the DBMS home directory
 * (created if missing; data under {@code DIR/data}, internal logs under {@code DIR/logs}); {@code
 * PORT} is the Bolt port and must be a real port (the caller picks a free one); {@code HOST} is the
 * address Bolt listens on and advertises, 127.0.0.1 by default.
 *
 * <p>Protocol with the parent process: once the default database is available, exactly one line
 * {@code READY bolt://HOST:PORT} is printed to stdout. Nothing else is ever written to
 * stdout; the user log goes to stderr. The process then runs until its stdin reaches end of file
 * (the parent closed the pipe or died) or it receives SIGTERM/SIGINT; either way the management
 * service is shut down cleanly by a shutdown hook. Exit code 0 on a clean stop, 1 on a startup
 * failure, 2 on bad arguments.
 */
public final class Neo4jTestServer {

  private static final String DEFAULT_HOST = "127.0.0.1";
  private static final long PAGE_CACHE_BYTES = ByteUnit.mebiBytes(256);
  private static final long TX_LOG_ROTATION_BYTES = ByteUnit.mebiBytes(16);
  private static final long AVAILABLE_TIMEOUT_SECONDS = 120;
  private static final Duration BOLT_SHUTDOWN_WAIT = Duration.ofSeconds(1);

  private Neo4jTestServer() {}

  /**
   * Starts the server; see the class documentation.
   *
   * @param args the DBMS home directory, the Bolt port and, optionally, the Bolt host
   */
  public static void main(String[] args) {
    // Keep stdout reserved for the READY line: anything else printing to System.out goes to stderr.
    PrintStream stdout = System.out;
    System.setOut(System.err);

    if (args.length != 2 && args.length != 3) {
      System.err.println("usage: Neo4jTestServer DIR PORT [HOST]");
      System.exit(2);
    }
    Path home = Path.of(args[0]).toAbsolutePath();
    String host = args.length == 3 ? args[2] : DEFAULT_HOST;
    int port;
    try {
      port = Integer.parseInt(args[1]);
    } catch (NumberFormatException e) {
      port = -1;
    }
    if (port < 1 || port > 65535) {
      System.err.println("Neo4jTestServer: PORT must be in 1..65535, got " + args[1]);
      System.exit(2);
    }

    DatabaseManagementService service;
    try {
      Files.createDirectories(home);
      service = start(home, host, port);
    } catch (Throwable e) {
      System.err.println("Neo4jTestServer: startup failed: " + e);
      e.printStackTrace(System.err);
      System.exit(1);
      return;
    }

    AtomicBoolean stopped = new AtomicBoolean(false);
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  if (stopped.compareAndSet(false, true)) {
                    System.err.println("Neo4jTestServer: shutting down");
                    service.shutdown();
                    System.err.println("Neo4jTestServer: stopped");
                  }
                },
                "neo4j-test-server-shutdown"));

    stdout.println("READY bolt://" + host + ":" + port);
    stdout.flush();

    waitForEndOfInput(System.in);
    System.exit(0); // runs the shutdown hook
  }

  private static DatabaseManagementService start(Path home, String host, int port) {
    DatabaseManagementService service =
        new DatabaseManagementServiceBuilder(home)
            .setUserLogProvider(new Log4jLogProvider(unclosable(System.err), Level.INFO))
            .setConfig(BoltConnector.enabled, true)
            .setConfig(BoltConnector.listen_address, new SocketAddress(host, port))
            .setConfig(BoltConnector.advertised_address, new SocketAddress(host, port))
            .setConfig(GraphDatabaseSettings.auth_enabled, false)
            .setConfig(GraphDatabaseSettings.pagecache_memory, PAGE_CACHE_BYTES)
            // Small, non-preallocated transaction logs keep test data directories small.
            .setConfig(GraphDatabaseSettings.preallocate_logical_logs, false)
            .setConfig(GraphDatabaseSettings.logical_log_rotation_threshold, TX_LOG_ROTATION_BYTES)
            .setConfig(GraphDatabaseSettings.preallocate_store_files, false)
            // No usage reports (there is no internet access in tests anyway).
            .setConfig(GraphDatabaseSettings.udc_enabled, false)
            // The default (5 s) makes every shutdown wait that long for Bolt's idle event loops;
            // with 1 s, debug.log warns that they were "forcefully terminated", which is harmless
            // because by then every database has already been stopped.
            .setConfig(
                BoltConnectorInternalSettings.thread_pool_shutdown_wait_time, BOLT_SHUTDOWN_WAIT)
            .build();
    try {
      GraphDatabaseService db = service.database(GraphDatabaseSettings.DEFAULT_DATABASE_NAME);
      long timeoutMillis = TimeUnit.SECONDS.toMillis(AVAILABLE_TIMEOUT_SECONDS);
      if (!db.isAvailable(timeoutMillis)) {
        throw new IllegalStateException(
            "database not available after " + AVAILABLE_TIMEOUT_SECONDS + " s");
      }
    } catch (RuntimeException e) {
      service.shutdown();
      throw e;
    }
    return service;
  }

  /**
   * Wraps {@code out} so that closing the wrapper only flushes: Neo4j closes its user log at
   * shutdown, which must not close the process's stderr.
   */
  private static OutputStream unclosable(OutputStream out) {
    return new FilterOutputStream(out) {
      @Override
      public void write(byte[] b, int off, int len) throws IOException {
        out.write(b, off, len);
      }

      @Override
      public void close() throws IOException {
        flush();
      }
    };
  }

  /** Blocks until {@code in} reaches end of file (or fails), discarding whatever it reads. */
  private static void waitForEndOfInput(InputStream in) {
    byte[] buffer = new byte[256];
    try {
      while (in.read(buffer) >= 0) {
        // Input is ignored; only its end matters.
      }
    } catch (IOException e) {
      System.err.println("Neo4jTestServer: stdin failed (" + e + "), shutting down");
    }
  }
}
