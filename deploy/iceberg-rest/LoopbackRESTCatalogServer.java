package org.apache.iceberg.rest;

import java.lang.reflect.Method;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.eclipse.jetty.server.handler.gzip.GzipHandler;
import org.eclipse.jetty.servlet.ServletContextHandler;
import org.eclipse.jetty.servlet.ServletHolder;

/**
 * Apache Iceberg's RESTCatalogServer (test-fixtures 1.10.0), bound to one interface instead of all of them.
 *
 * <p>RESTCatalogServer.start() builds the same servlet on {@code new Server(port)}, which listens on 0.0.0.0
 * and has no host option. This launcher reuses its backend set-up (CATALOG_* environment variables, JDBC
 * store, FileIO) and serves it on {@code REST_HOST} (default 127.0.0.1) : {@code rest.port}.
 * Compiled by stream_workers/parts/iceberg_rest.py against the fetched jars.
 */
public final class LoopbackRESTCatalogServer {
  private LoopbackRESTCatalogServer() {}

  public static void main(String[] args) throws Exception {
    RESTCatalogServer server = new RESTCatalogServer();
    Method init = RESTCatalogServer.class.getDeclaredMethod("initializeBackendCatalog");
    init.setAccessible(true);
    RESTCatalogServer.CatalogContext context = (RESTCatalogServer.CatalogContext) init.invoke(server);

    ServletContextHandler handler = new ServletContextHandler(ServletContextHandler.NO_SESSIONS);
    handler.addServlet(new ServletHolder(new RESTCatalogServlet(new RESTServerCatalogAdapter(context))), "/*");
    handler.insertHandler(new GzipHandler());

    String host = System.getenv().getOrDefault("REST_HOST", "127.0.0.1");
    int port = Integer.parseInt(context.configuration().getOrDefault("rest.port", "8181"));
    Server http = new Server();
    ServerConnector connector = new ServerConnector(http);
    connector.setHost(host);
    connector.setPort(port);
    http.addConnector(connector);
    http.setHandler(handler);
    http.start();
    http.join();
  }
}
