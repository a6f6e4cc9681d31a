// CounterApp: a test target whose EventSource "Diagmon-Counters" exposes counters with known
// values, so that counter decoding and /metrics can be checked against exact numbers.
//
// Usage: dotnet CounterApp.dll [trigger-file]
//   fixed-mean  EventCounter written with 42.5 every 50 ms (so its mean is exactly 42.5), units "ms"
//   requests    IncrementingEventCounter, incremented only when trigger-file appears: by the number
//               written in it (the file is then deleted and "incremented N" printed)
//   polled      PollingCounter that always reads 12, units "MB"
// Prints "ready" once started; runs until killed or sent SIGTERM.
using System;
using System.Diagnostics.Tracing;
using System.IO;
using System.Threading;

[EventSource(Name = "Diagmon-Counters")]
sealed class CounterSource : EventSource
{
    public static readonly CounterSource Log = new CounterSource();

    public readonly EventCounter FixedMean;
    public readonly IncrementingEventCounter Requests;
    public readonly PollingCounter Polled;

    CounterSource()
    {
        FixedMean = new EventCounter("fixed-mean", this) { DisplayName = "Fixed mean", DisplayUnits = "ms" };
        Requests = new IncrementingEventCounter("requests", this)
        {
            DisplayName = "Requests",
            DisplayRateTimeScale = TimeSpan.FromSeconds(1),
        };
        Polled = new PollingCounter("polled", this, () => 12) { DisplayName = "Twelve MB", DisplayUnits = "MB" };
    }
}

static class CounterApp
{
    static void Main(string[] args)
    {
        string trigger = args.Length > 0 ? args[0] : null;
        var log = CounterSource.Log;
        Console.WriteLine("ready");
        Console.Out.Flush();
        while (true)
        {
            log.FixedMean.WriteMetric(42.5f);
            if (trigger != null && File.Exists(trigger))
            {
                int amount = int.Parse(File.ReadAllText(trigger).Trim());
                File.Delete(trigger);
                log.Requests.Increment(amount);
                Console.WriteLine("incremented " + amount);
                Console.Out.Flush();
            }
            Thread.Sleep(50);
        }
    }
}
