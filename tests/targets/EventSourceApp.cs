// EventSourceApp: a test target that writes events of its own EventSource, "Diagmon-Test",
// so that provider names, keywords and levels can be tested end to end.
//
// Usage: dotnet EventSourceApp.dll [seconds]
//   seconds  how long to run (default: until killed or sent SIGTERM)
// Every 10 ms it writes Tick(n) (keyword Alpha = 0x1, Informational) and
// Detail("detail n") (keyword Beta = 0x2, Verbose). Prints "ready" once started.
using System;
using System.Diagnostics;
using System.Diagnostics.Tracing;
using System.Threading;

[EventSource(Name = "Diagmon-Test")]
sealed class TestSource : EventSource
{
    public static readonly TestSource Log = new TestSource();

    public static class Keywords
    {
        public const EventKeywords Alpha = (EventKeywords)0x1;
        public const EventKeywords Beta = (EventKeywords)0x2;
    }

    [Event(1, Keywords = Keywords.Alpha, Level = EventLevel.Informational)]
    public void Tick(int n) { WriteEvent(1, n); }

    [Event(2, Keywords = Keywords.Beta, Level = EventLevel.Verbose)]
    public void Detail(string s) { WriteEvent(2, s); }
}

static class EventSourceApp
{
    static void Main(string[] args)
    {
        int seconds = args.Length > 0 ? int.Parse(args[0]) : -1;
        var clock = Stopwatch.StartNew();
        Console.WriteLine("ready");
        Console.Out.Flush();

        for (int n = 0; seconds < 0 || clock.Elapsed.TotalSeconds < seconds; n++)
        {
            TestSource.Log.Tick(n);
            TestSource.Log.Detail("detail " + n);
            Thread.Sleep(10);
        }
    }
}
