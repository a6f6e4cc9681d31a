// Worker: a test target that allocates and burns CPU, so that a trace of it holds
// GC, JIT and sample-profiler events.
//
// Usage: dotnet Worker.dll [seconds [exit-code]]
//   seconds    how long to run (default: until killed or sent SIGTERM)
//   exit-code  the process exit code after `seconds` (default 0)
// Prints "ready" once its threads run; on a graceful exit (the time is up, or SIGTERM)
// it prints "bye" from the ProcessExit handler.
using System;
using System.Collections.Generic;
using System.Text;
using System.Threading;

static class Worker
{
    static volatile bool stop;

    static int Main(string[] args)
    {
        int seconds = args.Length > 0 ? int.Parse(args[0]) : -1;
        int exitCode = args.Length > 1 ? int.Parse(args[1]) : 0;
        AppDomain.CurrentDomain.ProcessExit += (s, e) => { stop = true; Console.WriteLine("bye"); Console.Out.Flush(); };

        for (int i = 0; i < 3; i++)
        {
            var t = new Thread(Churn) { IsBackground = true, Name = "churn-" + i };
            t.Start(i);
        }
        Console.WriteLine("ready");
        Console.Out.Flush();

        if (seconds < 0) Thread.Sleep(Timeout.Infinite);
        Thread.Sleep(TimeSpan.FromSeconds(seconds));
        stop = true;
        return exitCode;
    }

    // Builds and drops lists of objects and strings, keeping a few alive so that
    // collections promote some of them.
    static void Churn(object seed)
    {
        var rng = new Random((int)seed);
        var kept = new List<object>();
        long n = 0;
        while (!stop)
        {
            var list = new List<string>();
            var sb = new StringBuilder();
            for (int i = 0; i < 200; i++)
            {
                sb.Append(i).Append(',');
                list.Add(sb.ToString());
            }
            var buffer = new byte[rng.Next(64, 16 * 1024)];
            buffer[0] = (byte)n;
            if (n++ % 50 == 0) kept.Add(list);
            if (kept.Count > 1000) kept.Clear();
        }
    }
}
