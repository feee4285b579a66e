// Connects Kafka's Java AdminClient with given client properties and calls describeCluster, to prove
// that a listener accepts (or refuses) a security setup. Run from source with the Kafka jars on the
// classpath (kafkit_testkit::java_source):
//
//   java ClientCheck.java --case NAME key=value... [--case NAME key=value...]...
//
// The cases run at once, each with its own AdminClient. One line per case, in the given order:
//   NAME ok nodes=<count> cluster=<id>
//   NAME fail <exception class>: <message>
// Exit status 0 when every case connected, 1 when any failed, 2 on bad arguments.

import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterResult;

public class ClientCheck {
    private record Case(String name, Properties props) {}

    public static void main(String[] args) {
        List<Case> cases = new ArrayList<>();
        for (String arg : args) {
            if (arg.equals("--case")) {
                cases.add(null);
            } else if (!cases.isEmpty() && cases.get(cases.size() - 1) == null) {
                cases.set(cases.size() - 1, new Case(arg, defaults()));
            } else if (!cases.isEmpty() && arg.contains("=")) {
                int eq = arg.indexOf('=');
                cases.get(cases.size() - 1).props().setProperty(arg.substring(0, eq), arg.substring(eq + 1));
            } else {
                System.err.println("usage: ClientCheck --case NAME key=value... [--case NAME key=value...]...; bad argument: " + arg);
                System.exit(2);
            }
        }
        if (cases.isEmpty() || cases.contains(null)) {
            System.err.println("usage: ClientCheck --case NAME key=value... [--case NAME key=value...]...");
            System.exit(2);
        }
        List<CompletableFuture<String>> results = new ArrayList<>();
        for (Case c : cases) {
            results.add(CompletableFuture.supplyAsync(() -> check(c)));
        }
        boolean allOk = true;
        for (int i = 0; i < cases.size(); i++) {
            String line = results.get(i).join();
            allOk &= line.startsWith(cases.get(i).name() + " ok ");
            System.out.println(line);
        }
        System.exit(allOk ? 0 : 1);
    }

    private static Properties defaults() {
        Properties props = new Properties();
        props.setProperty(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        props.setProperty(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "15000");
        props.setProperty(AdminClientConfig.RETRY_BACKOFF_MS_CONFIG, "200");
        return props;
    }

    private static String check(Case c) {
        Admin admin = null;
        try {
            admin = Admin.create(c.props());
            DescribeClusterResult cluster = admin.describeCluster();
            String id = cluster.clusterId().get(20, TimeUnit.SECONDS);
            int nodes = cluster.nodes().get(20, TimeUnit.SECONDS).size();
            return c.name() + " ok nodes=" + nodes + " cluster=" + id;
        } catch (Throwable e) {
            Throwable cause = e instanceof ExecutionException && e.getCause() != null ? e.getCause() : e;
            String message = String.valueOf(cause.getMessage()).replace('\n', ' ');
            return c.name() + " fail " + cause.getClass().getName() + ": " + message;
        } finally {
            if (admin != null) {
                admin.close(java.time.Duration.ofSeconds(2));
            }
        }
    }
}
